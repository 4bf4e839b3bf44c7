// backup-database end to end: the built executable against real PostgreSQL containers.
import { createServer, type Server } from 'node:http';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { backupFileName, sequenceFileName } from '../lib/store/backup-files.ts';
import { takeFingerprint } from '../lib/dump/fingerprint.ts';
import { lockFileName } from '../lib/host/lock.ts';
import { resolveBackupArgument } from '../lib/restore/flow.ts';
import { runTool, startTool, waitFor } from './helpers/cli.ts';
import { openSession, psql, removeDb, scratchName, seedPlanetarion, startDb, writeRows } from './helpers/db.ts';
import { TempDirs } from './helpers/tmp.ts';

const db = scratchName('pb-backup');
const big = scratchName('pb-backup-big');
const temp = new TempDirs('planetarion-nas-');
let ready = false;

const files = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);
const backupsIn = (dir: string) =>
  files(join(dir, 'backups')).filter((f) => /^planetarion_backup_\d{8}_\d{6}\.sql(\.gz)?$/.test(f));
const logOf = (dir: string) => readFileSync(join(dir, 'logs/backup.log'), 'utf8');

/** Seeds a backup dir with earlier "backups" (valid names, sidecars) dated 2023-12-01 at the given hours. */
function earlierBackups(dir: string, hours: number[]): string[] {
  mkdirSync(join(dir, 'backups'), { recursive: true, mode: 0o700 });
  return hours.map((h) => {
    const name = `planetarion_backup_20231201_${String(h).padStart(2, '0')}0000.sql.gz`;
    writeFileSync(join(dir, 'backups', name), `earlier backup ${h}`);
    writeFileSync(join(dir, 'backups', `${name}.json`), '{}');
    writeFileSync(join(dir, 'backups', `${name}.sha256`), `${'0'.repeat(64)}  ${name}\n`);
    return name;
  });
}

/** Restores a dump file into a fresh container with the raw pipeline and fingerprints it. */
async function restoredFingerprint(file: string): Promise<string> {
  const target = scratchName('pb-restore-check');
  try {
    await startDb(target, { timeoutMs: 300_000 });
    execFileSync('sh', [
      '-c',
      `${file.endsWith('.gz') ? 'gunzip -c' : 'cat'} "$1" | docker exec -i "$2" psql -X -q -v ON_ERROR_STOP=1 -U planetarion_user -d planetarion >/dev/null`,
      'sh',
      file,
      target,
    ]);
    const session = openSession(target);
    try {
      return (await takeFingerprint(session)).sha256;
    } finally {
      await session.close();
    }
  } finally {
    await removeDb(target);
  }
}

const backup = suite('backup-database');

backup('setup: a seeded database and a large one', async () => {
  // A generous wait: the test machine may be busy with other suites.
  await Promise.all([startDb(db, { timeoutMs: 300_000 }), startDb(big, { timeoutMs: 300_000 })]);
  await seedPlanetarion(db, { scale: 1 });
  // ~250 MB of plain SQL: a dump that takes seconds, so it can be interrupted mid-stream.
  await psql(
    big,
    'CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS payload FROM generate_series(1, 1000000) g;',
  );
  ready = true;
});

backup(
  'writes a verified .sql.gz with manifest and checksum, private modes, timestamped log, status.json',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const r = await runTool('backup-database', ['--json'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
    assert.is(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.match(summary.file, /^planetarion_backup_\d{8}_\d{6}\.sql\.gz$/);
    assert.equal(files(join(dir, 'backups')), [
      sequenceFileName,
      summary.file,
      `${summary.file}.json`,
      `${summary.file}.sha256`,
    ]);
    assert.is(readFileSync(join(dir, 'backups', sequenceFileName), 'utf8'), '1\n');
    for (const f of files(join(dir, 'backups'))) assert.is(statSync(join(dir, 'backups', f)).mode & 0o777, 0o600, f);
    assert.is(statSync(join(dir, 'backups')).mode & 0o777, 0o700);
    assert.is(statSync(join(dir, 'logs')).mode & 0o777, 0o700);
    assert.is(statSync(join(dir, 'logs/backup.log')).mode & 0o777, 0o600);
    execFileSync('sha256sum', ['-c', `${summary.file}.sha256`], { cwd: join(dir, 'backups') });
    const manifest = JSON.parse(readFileSync(join(dir, 'backups', `${summary.file}.json`), 'utf8'));
    assert.is(manifest.sha256, summary.sha256);
    assert.is(manifest.size, statSync(join(dir, 'backups', summary.file)).size);
    assert.is(manifest.format, 'gzip');
    assert.is(manifest.container, db);
    assert.match(manifest.postgres.server, /^15\./);
    assert.match(manifest.postgres.pgDump, /^15\./);
    assert.is(manifest.fingerprint.sha256, summary.fingerprint);
    assert.ok(
      manifest.fingerprint.tables.some(
        (t: { schema: string; table: string }) => t.schema === 'game' && t.table === 'a "quoted" table',
      ),
    );
    assert.ok(
      manifest.fingerprint.sequences.some(
        (s: { name: string; value: string }) => s.name === 'public.tick_seq' && s.value === '4321',
      ),
    );
    // gzip and trailer: independent tools agree.
    const sql = execFileSync('gunzip', ['-c', join(dir, 'backups', summary.file)], { maxBuffer: 1 << 30 }).toString();
    assert.match(sql, /-- PostgreSQL database dump complete/);
    const log = logOf(dir);
    assert.match(log, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] INFO - Starting backup/m);
    assert.match(log, /INFO - Backup completed successfully/);
    const status = JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8'));
    assert.is(status.lastRun.ok, true);
    assert.is(status.lastSuccess.file, summary.file);
    assert.is(statSync(join(dir, 'status.json')).mode & 0o777, 0o600);
    // Dumps hold emails and password hashes: none of it may reach the log or stderr.
    const secret = await psql(db, 'SELECT password_hash FROM users ORDER BY id LIMIT 1');
    const email = await psql(db, 'SELECT email FROM users ORDER BY id LIMIT 1');
    for (const text of [log, r.stderr, r.stdout]) {
      assert.not.match(text, secret);
      assert.not.match(text, email);
    }
  },
);

backup('the fingerprint matches a restore of the file while a writer inserts rows during the dump', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const writer = await writeRows(db, { intervalMs: 1 });
  let r: Awaited<ReturnType<typeof runTool>>;
  try {
    r = await runTool('backup-database', ['--json'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
  } finally {
    await writer.stop();
  }
  assert.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.is(await restoredFingerprint(join(dir, 'backups', summary.file)), summary.fingerprint);
});

backup("--compress none writes the seed's plain .sql, and its fingerprint also reproduces", async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const r = await runTool('backup-database', ['--json', '--compress', 'none'], {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: db,
  });
  assert.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.match(summary.file, /\.sql$/);
  const head = readFileSync(join(dir, 'backups', summary.file), 'utf8').slice(0, 200);
  assert.match(head, /PostgreSQL database dump/);
  assert.is(await restoredFingerprint(join(dir, 'backups', summary.file)), summary.fingerprint);
});

backup(
  '--format custom writes a .dump that restore-database proves; rotation treats the formats as one series',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const earlier = earlierBackups(dir, [2, 10]);
    const r = await runTool('backup-database', ['--json', '--format', 'custom', '--keep', '2'], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: db,
    });
    assert.is(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.match(summary.file, /^planetarion_backup_\d{8}_\d{6}\.dump$/);
    assert.is(
      readFileSync(join(dir, 'backups', summary.file))
        .subarray(0, 5)
        .toString(),
      'PGDMP',
    );
    assert.equal(summary.rotated, [earlier[0]]);
    assert.equal(
      files(join(dir, 'backups')).filter(
        (f) => !f.endsWith('.json') && !f.endsWith('.sha256') && f !== sequenceFileName,
      ),
      [earlier[1]!, summary.file].sort(),
    );
    const target = scratchName('pb-custom-restore');
    try {
      await startDb(target, { timeoutMs: 300_000 });
      const restored = await runTool('restore-database', [summary.file, '--yes', '--json'], {
        PLANETARION_DIR: dir,
        PLANETARION_DB_CONTAINER: target,
      });
      assert.is(restored.code, 0, restored.stderr);
      assert.is(JSON.parse(restored.stdout).winner.fingerprint, summary.fingerprint);
    } finally {
      await removeDb(target);
    }
  },
);

backup('--fingerprint off skips it and the manifest says so', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const r = await runTool('backup-database', ['--json', '--fingerprint', 'off'], {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: db,
  });
  assert.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.is(summary.fingerprint, null);
  assert.is(JSON.parse(readFileSync(join(dir, 'backups', `${summary.file}.json`), 'utf8')).fingerprint, null);
});

backup(
  "a fingerprinted backup starts one docker exec: the snapshot and fingerprint session runs inside the dump's",
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    // The engine's own record of the execs made in the container while the backup ran (by the
    // socket or the CLI alike), less those of the container's health check.
    const since = new Date().toISOString();
    const r = await runTool('backup-database', ['--json'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
    const until = new Date(Date.now() + 1000).toISOString();
    assert.is(r.code, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).fingerprint, /^[0-9a-f]{64}$/);
    const [id, health] = execFileSync(
      'docker',
      ['container', 'inspect', '--format', '{{.Id}}\t{{json .Config.Healthcheck.Test}}', db],
      { encoding: 'utf8' },
    )
      .trim()
      .split('\t');
    const healthCommand = (JSON.parse(health!) as string[]).at(-1)!;
    const execs = execFileSync(
      'docker',
      [
        'events',
        '--since',
        since,
        '--until',
        until,
        '--filter',
        `container=${id}`,
        '--filter',
        'event=exec_create',
        '--format',
        // One JSON string a line: the script's own lines are in the action.
        '{{json .Action}}',
      ],
      { encoding: 'utf8' },
    )
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as string)
      .filter((action) => !action.includes(healthCommand));
    assert.is(execs.length, 1, execs.join('\n'));
    assert.match(execs[0]!, /^exec_create: sh -c /);
  },
);

backup('PLANETARION_FINGERPRINT_EXCLUDE leaves tables out and lists them', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const r = await runTool('backup-database', ['--json'], {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: db,
    PLANETARION_FINGERPRINT_EXCLUDE: 'chat_*,game.Mixed Case',
  });
  assert.is(r.code, 0, r.stderr);
  const manifest = JSON.parse(readFileSync(join(dir, 'backups', `${JSON.parse(r.stdout).file}.json`), 'utf8'));
  assert.equal(manifest.fingerprint.excluded.sort(), ['game.Mixed Case', 'public.chat_messages']);
  assert.not.ok(manifest.fingerprint.tables.some((t: { table: string }) => t.table === 'chat_messages'));
});

backup('--dry-run runs every check and writes nothing', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const r = await runTool('backup-database', ['--dry-run'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /Dry run: all checks passed/);
  assert.equal(files(dir), []);
  const missing = await runTool('backup-database', ['--dry-run'], {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: 'no-such-container',
  });
  assert.is(missing.code, 1);
  assert.equal(files(dir), []);
});

for (const [name, prepare] of [
  ['missing', async () => 'pb-no-such-container'],
  [
    'stopped',
    async () => {
      const c = scratchName('pb-stopped');
      await startDb(c, { timeoutMs: 300_000 });
      execFileSync('docker', ['stop', '-t', '5', c]);
      return c;
    },
  ],
  [
    'unhealthy',
    async () => {
      const c = scratchName('pb-unhealthy');
      execFileSync('docker', [
        'run',
        '-d',
        '--name',
        c,
        '--network',
        'none',
        '--health-cmd',
        'exit 1',
        '--health-interval',
        '1s',
        '--health-retries',
        '1',
        '--health-start-period',
        '1s',
        '-e',
        'POSTGRES_USER=planetarion_user',
        '-e',
        'POSTGRES_DB=planetarion',
        'planetarion-test-pg:latest',
      ]);
      await waitFor(
        'unhealthy status',
        () =>
          execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', c]).toString().trim() === 'unhealthy',
        30_000,
        200,
      );
      return c;
    },
  ],
  [
    'not accepting connections',
    async () => {
      // Running, no Docker health check, and no PostgreSQL server inside: only pg_isready can tell.
      const c = scratchName('pb-noserver');
      execFileSync('docker', [
        'run',
        '-d',
        '--name',
        c,
        '--network',
        'none',
        '--no-healthcheck',
        '--label',
        'planetarion.test=1',
        '--entrypoint',
        'sleep',
        'planetarion-test-pg:latest',
        'infinity',
      ]);
      return c;
    },
  ],
] as const) {
  backup(`a ${name} container: exit 1, the reason in the log, no file created, no backup deleted`, async () => {
    const container = await prepare();
    try {
      // Without the fingerprint no session fails first: pg_dump does, and pg_isready in its exec names why.
      for (const fingerprint of name === 'not accepting connections' ? ['on', 'off'] : ['on']) {
        const dir = temp.make();
        const earlier = earlierBackups(dir, [2, 10, 18, 20]);
        const r = await runTool('backup-database', [], {
          PLANETARION_DIR: dir,
          PLANETARION_DB_CONTAINER: container,
          PLANETARION_KEEP: '1',
          PLANETARION_FINGERPRINT: fingerprint,
        });
        assert.is(r.code, 1, r.stderr);
        const expected = {
          missing: `ERROR - Database container '${container}' is not running`,
          stopped: `ERROR - Database container '${container}' is not running`,
          unhealthy: `ERROR - Database container '${container}' is not healthy`,
          'not accepting connections': `ERROR - PostgreSQL in '${container}' is not accepting connections (pg_isready: `,
        }[name];
        assert.ok(logOf(dir).includes(expected), `fingerprint ${fingerprint}:\n${logOf(dir)}`);
        assert.equal(backupsIn(dir), earlier);
        assert.is(files(join(dir, 'backups')).length, 12, 'sidecars intact, nothing new');
        assert.is(JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')).lastRun.ok, false);
      }
    } finally {
      if (container.startsWith('pb-') && container !== 'pb-no-such-container') await removeDb(container);
    }
  });
}

backup(
  'the container killed (or stopped, without the fingerprint) while pg_dump streams: exit 1, no final file, no temp file, earlier backups intact',
  async () => {
    assert.ok(ready, 'setup failed');
    const victim = scratchName('pb-victim');
    try {
      // A copy of the large database that may be killed.
      await startDb(victim, { timeoutMs: 300_000 });
      await psql(
        victim,
        'CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS payload FROM generate_series(1, 1000000) g;',
      );
      // `docker stop` sends the server SIGINT (the image's STOPSIGNAL, as in the official image): a
      // fast shutdown, so pg_dump fails while the exec still runs, and pg_isready after it finds
      // no server, which must not pass for a server that never accepted the dump.
      for (const [how, fingerprint] of [
        ['SIGKILL', 'on'],
        ['stop', 'off'],
      ] as const) {
        if (how === 'stop') {
          execFileSync('docker', ['start', victim]);
          await waitFor(
            `${victim} to be healthy again`,
            () =>
              execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', victim]).toString().trim() ===
              'healthy',
            180_000,
            500,
          );
        }
        const dir = temp.make();
        const earlier = earlierBackups(dir, [2, 10]);
        const run = startTool('backup-database', ['--compress', 'none'], {
          PLANETARION_DIR: dir,
          PLANETARION_DB_CONTAINER: victim,
          PLANETARION_KEEP: '1',
          PLANETARION_FINGERPRINT: fingerprint,
        });
        await waitFor(
          'the dump to be streaming',
          () =>
            files(join(dir, 'backups')).some(
              (f) => f.includes('.tmp-') && statSync(join(dir, 'backups', f)).size > 1_000_000,
            ),
          60_000,
          20,
        );
        execFileSync('docker', how === 'stop' ? ['stop', victim] : ['kill', '--signal', how, victim]);
        const r = await run.done;
        assert.is(r.code, 1, r.stderr);
        assert.equal(backupsIn(dir), earlier);
        assert.equal(
          files(join(dir, 'backups')).filter((f) => f.includes('.tmp-')),
          [],
        );
        assert.is(files(join(dir, 'backups')).length, 6);
        assert.match(
          logOf(dir),
          /\] ERROR - Database container '.*' is not running \(it stopped during the dump\)/,
          `${how}:\n${logOf(dir)}`,
        );
      }
    } finally {
      await removeDb(victim);
    }
  },
);

backup(
  'a full filesystem (small tmpfs): exit 1 naming it, no partial file, earlier backups intact; the next run after space is freed succeeds',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const backups = join(dir, 'backups');
    mkdirSync(backups, { mode: 0o700 });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=600k,mode=0700', 'tmpfs', backups]);
    try {
      const earlier = earlierBackups(dir, [2]);
      const r = await runTool('backup-database', ['--compress', 'none'], {
        PLANETARION_DIR: dir,
        PLANETARION_DB_CONTAINER: db,
      });
      assert.is(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`no space left on the filesystem of ${backups}`));
      assert.equal(files(backups), [earlier[0]!, `${earlier[0]}.json`, `${earlier[0]}.sha256`]);
      execFileSync('mount', ['-o', 'remount,size=64m', backups]);
      const again = await runTool('backup-database', ['--compress', 'none', '--json'], {
        PLANETARION_DIR: dir,
        PLANETARION_DB_CONTAINER: db,
      });
      assert.is(again.code, 0, again.stderr);
      assert.is(backupsIn(dir).length, 2);
    } finally {
      execFileSync('umount', [backups]);
    }
  },
);

/** The connections the server logged since `since` (unix seconds) by the named program. */
function connectionsBy(program: string, since: number): number {
  // The server logs to stderr, which `docker logs` replays on its own stderr.
  const logs = spawnSync('docker', ['logs', '--since', since.toFixed(3), db], { encoding: 'utf8' });
  return `${logs.stdout}${logs.stderr}`
    .split('\n')
    .filter((l) => l.includes('connection authorized:') && l.endsWith(`application_name=${program}`)).length;
}

/** Processes in the container whose command line contains `text`. */
function processesRunning(text: string): number {
  return execFileSync('docker', ['top', db, '-eo', 'pid,args'])
    .toString()
    .split('\n')
    .filter((l) => l.includes(text)).length;
}

/** The dump's exec scripts still running in the container (the tool started them with its checks). */
function dumpScriptsRunning(): number {
  return processesRunning('pg_isready -U');
}

backup('too little space for a backup the size of the last one: refused before pg_dump connects', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const backups = join(dir, 'backups');
  mkdirSync(backups, { mode: 0o700 });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', backups]);
  // The dump's exec starts beside the checks and waits for their verdict: the server's own log
  // shows whether pg_dump ever connected.
  await psql(db, 'ALTER SYSTEM SET log_connections = on; SELECT pg_reload_conf();');
  try {
    writeFileSync(join(backups, 'planetarion_backup_20231201_020000.sql.gz'), Buffer.alloc(700 * 1024));
    const since = Date.now() / 1000 - 0.5;
    const r = await runTool('backup-database', [], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /not enough free space in .*the last backup was 700\.0 KB/);
    assert.equal(files(backups), ['planetarion_backup_20231201_020000.sql.gz']);
    await waitFor('the dump exec to end', () => dumpScriptsRunning() === 0, 10_000, 100);
    assert.is(connectionsBy('pg_dump', since), 0, 'pg_dump connected although a check had failed');
    // A custom archive is read back through pg_restore in the container, started with the dump:
    // it ends too, and the tool exits.
    const started = startTool('backup-database', ['--format', 'custom'], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: db,
    });
    let timer: NodeJS.Timeout | undefined;
    const custom = await Promise.race([
      started.done,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          started.child.kill('SIGKILL');
          reject(new Error('backup-database --format custom did not exit within 60 s of a failed check'));
        }, 60_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.is(custom.code, 1, custom.stderr);
    assert.match(custom.stderr, /not enough free space in /);
    await waitFor('the archive check to end', () => processesRunning('pg_restore') === 0, 10_000, 100);
    assert.is(connectionsBy('pg_dump', since), 0, 'pg_dump connected although a check had failed');
    // The same log sees the pg_dump of a backup that passes its checks.
    const good = await runTool('backup-database', ['--fingerprint', 'off'], {
      PLANETARION_DIR: temp.make(),
      PLANETARION_DB_CONTAINER: db,
    });
    assert.is(good.code, 0, good.stderr);
    await waitFor('the server to log the good run', () => connectionsBy('pg_dump', since) === 1, 10_000, 100);
  } finally {
    execFileSync('umount', [backups]);
    await psql(db, 'ALTER SYSTEM RESET log_connections; SELECT pg_reload_conf();');
  }
});

backup('pg_dump failing (a table the backup user may not read): exit 1, nothing rotated', async () => {
  assert.ok(ready, 'setup failed');
  await psql(
    db,
    'CREATE ROLE backup_reader LOGIN; GRANT USAGE ON SCHEMA public, game TO backup_reader; GRANT SELECT ON ALL TABLES IN SCHEMA public, game TO backup_reader; GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, game TO backup_reader; REVOKE SELECT ON users FROM backup_reader;',
  );
  try {
    const dir = temp.make();
    const earlier = earlierBackups(dir, [2, 4, 6, 8, 10]);
    const r = await runTool('backup-database', ['--keep', '3'], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: db,
      PLANETARION_DB_USER: 'backup_reader',
    });
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /permission denied for table users/);
    assert.match(logOf(dir), /ERROR - Backup failed: .*permission denied for table users/);
    assert.equal(backupsIn(dir), earlier);
    assert.equal(
      files(join(dir, 'backups')).filter((f) => f.includes('.tmp-')),
      [],
    );
  } finally {
    await psql(db, 'DROP OWNED BY backup_reader; DROP ROLE backup_reader;');
  }
});

backup('two runs at once: one backs up, the other exits 75 naming the holder', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const env = {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: big,
    PLANETARION_COMPRESS: 'none',
    PLANETARION_FINGERPRINT: 'off',
  };
  const first = startTool('backup-database', [], env);
  await waitFor('the first run to hold the lock', () => existsSync(join(dir, '.planetarion.lock')), 30_000, 10);
  const second = await runTool('backup-database', [], env);
  const firstResult = await first.done;
  assert.is(second.code, 75, second.stderr);
  assert.match(second.stderr, new RegExp(`pid ${first.child.pid}`));
  assert.is(firstResult.code, 0, firstResult.stderr);
  assert.is(backupsIn(dir).length, 1);
});

backup("a run killed mid-dump leaves a lock and a temp file; cron's next run takes over and cleans up", async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const env = {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: big,
    PLANETARION_COMPRESS: 'none',
    PLANETARION_FINGERPRINT: 'off',
  };
  const first = startTool('backup-database', [], env);
  await waitFor(
    'the dump to be streaming',
    () => files(join(dir, 'backups')).some((f) => f.includes('.tmp-')),
    30_000,
    10,
  );
  first.child.kill('SIGKILL');
  await first.done;
  assert.ok(existsSync(join(dir, '.planetarion.lock')));
  const hoursAgo = new Date(Date.now() - 3_600_000); // cron's next run comes hours later
  utimesSync(join(dir, '.planetarion.lock'), hoursAgo, hoursAgo);
  const next = await runTool('backup-database', [], env);
  assert.is(next.code, 0, next.stderr);
  assert.match(logOf(dir), /Took over a stale lock of backup-database \(pid \d+/);
  assert.match(logOf(dir), /Removed \.planetarion_backup_.*\.tmp-\d+, left behind by a run that crashed/);
  assert.equal(
    files(join(dir, 'backups')).filter((f) => f.includes('.tmp-')),
    [],
  );
  assert.is(backupsIn(dir).length, 1);
});

// With the fingerprint, the snapshot's psql session runs in the same exec and must end with it.
for (const fingerprint of ['off', 'on'] as const) {
  backup(
    `a run stopped with SIGTERM mid-dump (fingerprint ${fingerprint}) takes its docker exec with it: the temp file stops growing, no pg_dump or psql session stays`,
    async () => {
      assert.ok(ready, 'setup failed');
      const dir = temp.make();
      const backups = join(dir, 'backups');
      const run = startTool('backup-database', [], {
        PLANETARION_DIR: dir,
        PLANETARION_DB_CONTAINER: big,
        PLANETARION_COMPRESS: 'none',
        PLANETARION_FINGERPRINT: fingerprint,
      });
      const tempFile = () => files(backups).find((f) => f.includes('.tmp-'));
      await waitFor(
        'the dump to be streaming',
        () => Boolean(tempFile()) && statSync(join(backups, tempFile()!)).size > 1_000_000,
        30_000,
        10,
      );
      run.child.kill('SIGTERM');
      await run.done;
      assert.is(run.child.signalCode, 'SIGTERM', 'the tool ends as SIGTERM asks');
      await new Promise((resolve) => setTimeout(resolve, 300)); // writes already in flight land
      const size = statSync(join(backups, tempFile()!)).size;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.is(statSync(join(backups, tempFile()!)).size, size, 'the dump went on writing after the tool was stopped');
      await waitFor(
        'the pg_dump and psql sessions to end',
        async () =>
          (await psql(
            big,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('pg_dump', 'psql') AND pid <> pg_backend_pid()",
          )) === '0',
        // Generous: the backend notices its client is gone at its next write, which a loaded machine delays.
        60_000,
        100,
      );
    },
  );
}

backup('rotation keeps exactly the newest 3 with their sidecars and never touches foreign files', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const earlier = earlierBackups(dir, [2, 4, 6, 8, 10]);
  const foreign = [
    'planetarion_backup_notes.txt',
    'x_planetarion_backup_20231201_020000.sql',
    'planetarion_backup_20231201_020000.sql.bak',
    'README',
  ];
  for (const f of foreign) writeFileSync(join(dir, 'backups', f), 'keep me');
  const r = await runTool('backup-database', ['--json'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
  assert.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.rotated.sort(), earlier.slice(0, 3));
  assert.equal(backupsIn(dir), [...earlier.slice(3), summary.file].sort());
  const all = files(join(dir, 'backups'));
  for (const f of foreign) assert.ok(all.includes(f), f);
  for (const gone of earlier.slice(0, 3))
    assert.not.ok(
      all.some((f) => f.startsWith(gone)),
      gone,
    );
  for (const kept of earlier.slice(3)) assert.ok(all.includes(`${kept}.json`) && all.includes(`${kept}.sha256`));
});

backup('a dump less than half the size of the previous one is warned about', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  mkdirSync(join(dir, 'backups'), { mode: 0o700 });
  writeFileSync(join(dir, 'backups', 'planetarion_backup_20231201_020000.sql.gz'), Buffer.alloc(5 * 1024 * 1024));
  const r = await runTool('backup-database', ['--json'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
  assert.is(r.code, 0, r.stderr);
  assert.match(
    JSON.parse(r.stdout).warnings[0],
    /less than half the size of the previous one, planetarion_backup_20231201_020000\.sql\.gz/,
  );
  assert.match(logOf(dir), /WARN - This backup .* is less than half the size/);
});

backup(
  'monitoring ping: /start as a run starts, then GET on success or /fail on failure; an unreachable ping never fails the backup',
  async () => {
    assert.ok(ready, 'setup failed');
    const hits: string[] = [];
    const server: Server = createServer((req, res) => {
      hits.push(req.url!);
      res.end('OK');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const dir = temp.make();
      const ok = await runTool('backup-database', [], {
        PLANETARION_DIR: dir,
        PLANETARION_DB_CONTAINER: db,
        PLANETARION_PING_URL: `http://127.0.0.1:${port}/ping/abc-uuid`,
      });
      assert.is(ok.code, 0, ok.stderr);
      const bad = await runTool('backup-database', [], {
        PLANETARION_DIR: dir,
        PLANETARION_DB_CONTAINER: 'pb-no-such-container',
        PLANETARION_PING_URL: `http://127.0.0.1:${port}/ping/abc-uuid`,
      });
      assert.is(bad.code, 1);
      assert.equal(hits, ['/ping/abc-uuid/start', '/ping/abc-uuid', '/ping/abc-uuid/start', '/ping/abc-uuid/fail']);
      assert.not.match(logOf(dir), /abc-uuid/);
    } finally {
      server.close();
    }
    const dir = temp.make();
    const unreachable = await runTool('backup-database', [], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: db,
      PLANETARION_PING_URL: `http://127.0.0.1:${port}/gone`,
    });
    assert.is(unreachable.code, 0, unreachable.stderr);
    assert.match(logOf(dir), /WARN - monitoring ping http:\/\/127\.0\.0\.1:\d+ failed/);
  },
);

backup('--status lists backups newest first with checksum results and the last run', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const env = { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db };
  assert.is((await runTool('backup-database', [], env)).code, 0);
  const newest = JSON.parse((await runTool('backup-database', ['--json'], env)).stdout).file as string;
  const older = backupsIn(dir).find((f) => f !== newest)!;
  const path = join(dir, 'backups', older);
  const bytes = readFileSync(path);
  bytes[100] = bytes[100]! ^ 0xff;
  writeFileSync(path, bytes);
  const status = await runTool('backup-database', ['--status', '--json'], env);
  assert.is(status.code, 0, status.stderr);
  const report = JSON.parse(status.stdout);
  assert.equal(
    report.backups.map((b: { file: string }) => b.file),
    [newest, older].sort().reverse(),
  );
  assert.equal(
    report.backups.map((b: { checksum: string }) => b.checksum),
    ['ok', 'mismatch'],
  );
  assert.is(report.status.lastRun.ok, true);
  const human = await runTool('backup-database', ['--status'], env);
  assert.match(human.stdout, new RegExp(`${newest} .* checksum ok`));
  assert.match(human.stdout, /CHECKSUM MISMATCH/);
  assert.match(human.stdout, /Last run: .* succeeded/);
});

/** Runs a backup that must succeed; its --json summary. */
async function backupSummary(
  env: Record<string, string>,
): Promise<{ file: string; sequence: number; rotated: string[]; rotationHeld: string[] }> {
  const r = await runTool('backup-database', ['--json'], env);
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** Renames a backup and its sidecars as if it had been taken at `when` (its manifest says so too). */
function redate(backups: string, file: string, when: Date): string {
  const name = backupFileName(when, 'gzip');
  const manifest = JSON.parse(readFileSync(join(backups, `${file}.json`), 'utf8'));
  renameSync(join(backups, file), join(backups, name));
  writeFileSync(
    join(backups, `${name}.json`),
    JSON.stringify({ ...manifest, file: name, created: when.toISOString() }),
  );
  writeFileSync(
    join(backups, `${name}.sha256`),
    readFileSync(join(backups, `${file}.sha256`), 'utf8').replace(file, name),
  );
  for (const sidecar of [`${file}.json`, `${file}.sha256`]) unlinkSync(join(backups, sidecar));
  utimesSync(join(backups, name), when, when);
  return name;
}

backup(
  'a clock set back a day between two backups, and a file copied in with a later stamp: rotation and latest go by sequence; the future date is reported',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const backups = join(dir, 'backups');
    const env = { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db, PLANETARION_KEEP: '2' };
    const first = await backupSummary(env);
    assert.is(first.sequence, 1);
    // The first run's clock was a day ahead (name, manifest and mtime say tomorrow); it is right now.
    const tomorrow = new Date(Date.now() + 86_400_000);
    const early = redate(backups, first.file, tomorrow);
    const copied = backupFileName(new Date(Date.now() + 2 * 86_400_000), 'gzip');
    copyFileSync(join(backups, early), join(backups, copied));
    utimesSync(join(backups, copied), tomorrow, tomorrow);
    const second = await backupSummary(env);
    assert.is(second.sequence, 2);
    assert.equal(second.rotated, [copied], 'the copied-in file has no number: it is the oldest');
    assert.equal(backupsIn(dir), [second.file, early].sort());
    assert.is(resolveBackupArgument('latest', backups), join(backups, second.file));
    assert.is(readFileSync(join(backups, sequenceFileName), 'utf8'), '2\n');
    assert.match(logOf(dir), new RegExp(`WARN - ${early.replace(/\./g, '\\.')} is dated in the future`));
    const status = JSON.parse((await runTool('backup-database', ['--status', '--json'], env)).stdout);
    assert.equal(
      status.backups.map((b: { file: string; sequence: number }) => [b.file, b.sequence]),
      [
        [second.file, 2],
        [early, 1],
      ],
    );
    assert.match(status.warnings.join('\n'), /is dated in the future/);
    assert.match(
      (await runTool('backup-database', ['--status'], env)).stdout,
      /IN THE FUTURE[\s\S]*WARNING: .* is dated in the future/,
    );
  },
);

backup(
  'a table emptied before a backup: rotation held, nothing deleted, --status says why; the next backup rotates again',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const env = { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db, PLANETARION_KEEP: '1' };
    await psql(db, 'CREATE TABLE held_alliances AS SELECT g AS id FROM generate_series(1, 500) g;');
    try {
      const first = await backupSummary(env);
      await psql(db, 'DELETE FROM held_alliances;');
      const held = await backupSummary(env);
      assert.equal(held.rotated, []);
      assert.equal(held.rotationHeld, [
        `table public.held_alliances has 0 rows, 500 in the previous backup ${first.file}`,
      ]);
      assert.equal(backupsIn(dir), [first.file, held.file].sort());
      assert.match(logOf(dir), /WARN - Rotation held: no backup was deleted/);
      const status = await runTool('backup-database', ['--status'], env);
      assert.match(
        status.stdout,
        new RegExp(
          `Rotation held after ${held.file.replace(/\./g, '\\.')} .*no backup was deleted, because\\n  - table public\\.held_alliances has 0 rows, 500 in the previous backup`,
        ),
      );
      assert.equal(JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')).rotation.heldBecause, held.rotationHeld);
      const next = await backupSummary(env);
      assert.equal(next.rotated.sort(), [first.file, held.file].sort());
      assert.not.match((await runTool('backup-database', ['--status'], env)).stdout, /Rotation held/);
    } finally {
      await psql(db, 'DROP TABLE held_alliances;');
    }
  },
);

backup(
  'the lock through its empty-file window: two runs racing a lock file not yet written both exit 75 and leave it; once written whole it names its holder',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const env = { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db };
    const lock = join(dir, lockFileName);
    writeFileSync(lock, '');
    const racing = await Promise.all([runTool('backup-database', [], env), runTool('backup-database', [], env)]);
    for (const r of racing) {
      assert.is(r.code, 75, r.stderr);
      assert.match(r.stderr, /the lock .*\.planetarion\.lock is held: it is empty/);
      assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
    }
    assert.is(readFileSync(lock, 'utf8'), '', 'nobody took it over');
    writeFileSync(
      lock,
      JSON.stringify({
        pid: process.pid,
        startTicks: undefined,
        command: 'restore-database',
        host: hostname(),
        started: 'now',
      }),
    );
    const named = await runTool('backup-database', [], env);
    assert.is(named.code, 75);
    assert.match(named.stderr, new RegExp(`restore-database \\(pid ${process.pid}`));
    assert.equal(backupsIn(dir), []);
  },
);

backup(
  'symlinks planted at predictable names in the base and backup folders are replaced, never written through',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const outside = temp.make('planetarion-victim-');
    const victims = ['status', 'sequence'].map((n) => join(outside, n));
    for (const v of victims) writeFileSync(v, 'precious');
    mkdirSync(join(dir, 'backups'), { mode: 0o700 });
    symlinkSync(victims[0]!, join(dir, 'status.json'));
    symlinkSync(victims[1]!, join(dir, 'backups', sequenceFileName));
    const r = await runTool('backup-database', [], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
    assert.is(r.code, 0, r.stderr);
    for (const v of victims) assert.is(readFileSync(v, 'utf8'), 'precious');
    assert.not.ok(lstatSync(join(dir, 'status.json')).isSymbolicLink());
    assert.is(JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')).lastRun.ok, true);
    // The log is appended to, not replaced: a link there is refused with one line.
    const logDir = join(dir, 'logs');
    unlinkSync(join(logDir, 'backup.log'));
    symlinkSync(victims[0]!, join(logDir, 'backup.log'));
    const refused = await runTool('backup-database', [], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
    assert.is(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /the log file .*backup\.log is a symbolic link/);
    assert.is(readFileSync(victims[0]!, 'utf8'), 'precious');
  },
);

backup(
  'a role with 1 ms timeouts and an inheritance child: the backup succeeds, and the child is counted once',
  async () => {
    assert.ok(ready, 'setup failed');
    await psql(
      db,
      `CREATE TABLE inherit_parent (id int); CREATE TABLE inherit_child (extra text) INHERITS (inherit_parent);
    INSERT INTO inherit_parent VALUES (1), (2), (3); INSERT INTO inherit_child VALUES (4, 'x'), (5, 'y');
    ALTER ROLE planetarion_user SET statement_timeout = '1ms'; ALTER ROLE planetarion_user SET lock_timeout = '1ms';
    ALTER ROLE planetarion_user SET idle_in_transaction_session_timeout = '1ms';`,
    );
    try {
      const dir = temp.make();
      const r = await runTool('backup-database', ['--json'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
      assert.is(r.code, 0, r.stderr);
      const manifest = JSON.parse(readFileSync(join(dir, 'backups', `${JSON.parse(r.stdout).file}.json`), 'utf8'));
      const rows = Object.fromEntries(
        manifest.fingerprint.tables.map((t: { table: string; rows: number }) => [t.table, t.rows]),
      );
      assert.is(rows.inherit_parent, 3);
      assert.is(rows.inherit_child, 2);
      assert.is(manifest.fingerprint.algorithm, 'typed-only');
      assert.match(manifest.wal.lsn, /^[0-9A-F]+\/[0-9A-F]+$/);
      assert.match(manifest.wal.systemIdentifier, /^\d+$/);
    } finally {
      // The session's startup options beat the role's 1 ms settings (a 1 ms timer can also cancel a
      // first `SET statement_timeout = 0` itself, reported as 'due to user request').
      await psql(db, 'ALTER ROLE planetarion_user RESET ALL; DROP TABLE inherit_child, inherit_parent;', {
        db: "dbname=planetarion options='-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0'",
      });
    }
  },
);

backup(
  'bad input: an unreadable planetarion.env, a folder writable by others: exit 2, one line, no stack',
  async () => {
    const dir = temp.make();
    mkdirSync(join(dir, 'planetarion.env'));
    const unreadable = await runTool('backup-database', [], { PLANETARION_DIR: dir });
    assert.is(unreadable.code, 2, unreadable.stderr);
    assert.match(unreadable.stderr, /^Error: cannot read the config file .*planetarion\.env: it is a directory\n/);
    execFileSync('rmdir', [join(dir, 'planetarion.env')]);
    writeFileSync(join(dir, 'planetarion.env'), 'PLANETARION_PING_URL=\nPLANETARION_KEEP=\n');
    // A folder of another user, writable by others: refused, nothing changed.
    chmodSync(dir, 0o777);
    chownSync(dir, 65534, 65534);
    try {
      const open = await runTool('backup-database', [], { PLANETARION_DIR: dir });
      assert.is(open.code, 2, open.stderr);
      assert.match(
        open.stderr,
        /^Error: PLANETARION_DIR '.*' is writable by its group and others \(mode 0777\) and owned by uid 65534, not this user.*\nRun: chmod go-w /,
      );
      assert.is(statSync(dir).mode & 0o777, 0o777);
      assert.not.match(open.stderr, /\n\s+at /);
    } finally {
      chownSync(dir, process.getuid!(), process.getgid!());
    }
    // Our own folders left group-writable by the old scripts (an upgrade): made private with a warning, and the backup runs.
    mkdirSync(join(dir, 'backups'), { recursive: true });
    chmodSync(join(dir, 'backups'), 0o775);
    const upgraded = await runTool('backup-database', [], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
    assert.is(upgraded.code, 0, upgraded.stderr);
    assert.match(
      upgraded.stderr,
      /PLANETARION_DIR '.*' was writable by its group and others \(mode 0777\); made it 0755 \(chmod go-w\)/,
    );
    assert.match(upgraded.stderr, /PLANETARION_BACKUP_DIR '.*' was writable by its group \(mode 0775\); made it 0755/);
    assert.is(statSync(dir).mode & 0o777, 0o755);
    assert.is(statSync(join(dir, 'backups')).mode & 0o777, 0o755);
    chmodSync(dir, 0o700);
    for (const r of [unreadable]) assert.not.match(r.stderr, /\n\s+at /);
  },
);

backup('bad settings exit 2 naming the setting, and create nothing', async () => {
  const dir = temp.make();
  for (const [env, args, message] of [
    [{ PLANETARION_KEEP: '0' }, [], /PLANETARION_KEEP '0'/],
    [{}, ['--keep', 'abc'], /--keep 'abc'/],
    [{ PLANETARION_DIR: 'relative/path' }, [], /PLANETARION_DIR 'relative\/path'/],
    [{ PLANETARION_DB_CONTAINER: 'db;touch /tmp/pwned' }, [], /PLANETARION_DB_CONTAINER/],
    [{ PLANETARION_DIR: join(dir, 'missing') }, [], /PLANETARION_DIR '.*missing' does not exist/],
  ] as const) {
    const r = await runTool('backup-database', [...args], { PLANETARION_DIR: dir, ...env });
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  assert.equal(files(dir), []);
});

backup.after(async () => {
  await Promise.all([removeDb(db), removeDb(big)]);
  temp.removeAll();
});

backup.run();
