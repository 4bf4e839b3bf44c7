// restore-database under faults, end to end against real containers: a failure after the rename
// commits, signals at each phase of a swap, database-level properties, a gzip stream cut
// mid-COPY, a database volume too small, a backup of another database, a row shaped like a
// setval() line, and psql's row data kept out of the log of an encrypted setup.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants, gunzipSync, gzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readDatabaseProperties } from '../lib/dump/database-properties.ts';
import { oneShotSql } from '../lib/restore/attempt.ts';
import { createShell } from '../lib/host/shell.ts';
import { distBin, runTool, startTool, waitFor } from './helpers/cli.ts';
import { runInTerminal, startSshd } from './helpers/sshd.ts';
import { lockFileName, ownerIsAlive, type LockOwner } from '../lib/host/lock.ts';
import { psql, removeDb, scratchName, seedPlanetarion, startDb } from './helpers/db.ts';
import {
  acceptsConnections,
  backupInto,
  databases,
  fingerprintOf,
  marker,
  resealBackup,
  setMarker,
} from './helpers/restore-checks.ts';
import { TempDirs } from './helpers/tmp.ts';

const src = scratchName('pb-safety-src');
const props = scratchName('pb-safety-props');
const small = scratchName('pb-safety-small');
const temp = new TempDirs('planetarion-safety-');
let ready = false;
const env = (dir: string, container = src, extra: Record<string, string> = {}) => ({
  PLANETARION_DIR: dir,
  PLANETARION_DB_CONTAINER: container,
  ...extra,
});
/**
 * A real backup, once Docker calls the container healthy: on a loaded test machine its health
 * check lapses now and then, and a backup rightly refuses an unhealthy container.
 */
async function backup(dir: string, container: string, extra: Record<string, string> = {}): Promise<string> {
  const health = () =>
    execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', container], { encoding: 'utf8' }).trim();
  await waitFor(`${container} to be healthy`, () => health() === 'healthy', 180_000, 500);
  return backupInto(dir, container, extra);
}
const debugFiles = (dir: string) => readdirSync(join(dir, 'logs')).filter((f) => f.startsWith('restore_debug_'));

const safety = suite('restore-database under faults');

safety('setup: a seeded live database, a database with non-default properties, a small database volume', async () => {
  await Promise.all([startDb(src), startDb(props), startDb(small, { tmpfsSize: '128m' })]);
  await Promise.all([seedPlanetarion(src, { scale: 0.2 }), seedPlanetarion(small, { scale: 0.2 })]);
  ready = true;
});

safety(
  'a failure after the rename commits is a warning: --fallback tries no other backup, the original live database is kept',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    await setMarker(src, 'older');
    await backup(dir, src);
    await setMarker(src, 'newest');
    const newest = await backup(dir, src);
    await setMarker(src, 'original-live');
    // An older previous database that cannot be dropped (a template): the drop after the commit fails.
    const stuck = 'planetarion_previous_20000101_000000';
    await psql(src, `CREATE DATABASE ${stuck}; ALTER DATABASE ${stuck} IS_TEMPLATE true;`, { db: 'postgres' });
    try {
      const r = await runTool('restore-database', ['latest', '--fallback', '--yes', '--json'], env(dir));
      assert.is(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.is(result.attempts.length, 1);
      assert.ok(result.winner.file.endsWith(newest));
      assert.match(
        r.stderr,
        /The swap is done, but the older previous database 'planetarion_previous_20000101_000000' could not be dropped: [\s\S]*cannot drop a template database/,
      );
      assert.not.match(r.stderr, /was not changed/);
      assert.is(await marker(src), 'newest');
      const previous = result.winner.previousDatabase as string;
      assert.is(
        await psql(src, "SELECT body FROM chat_messages WHERE channel = '#marker' ORDER BY id DESC LIMIT 1", {
          db: previous,
        }),
        'original-live',
      );
    } finally {
      await psql(src, `ALTER DATABASE ${stuck} IS_TEMPLATE false; DROP DATABASE ${stuck};`, { db: 'postgres' });
    }
    // --rollback brings the original back and lets sessions in, even where they were refused.
    const previous = (await databases(src)).find((d) => /^planetarion_previous_\d{8}_\d{6}$/.test(d))!;
    await psql(src, `ALTER DATABASE ${previous} WITH ALLOW_CONNECTIONS false`, { db: 'postgres' });
    const back = await runTool('restore-database', ['--rollback', '--yes'], env(dir));
    assert.is(back.code, 0, back.stderr);
    assert.ok(await acceptsConnections(src));
    assert.is(await marker(src), 'original-live');
  },
);

for (const [signal, phase, line] of [
  ['SIGTERM', 'checking the file', /Restore attempt 1:/],
  ['SIGINT', 'loading', /Checked planetarion_backup_/],
  ['SIGHUP', 'proving', /Restored planetarion_backup_\S+ into/],
  ['SIGTERM', 'fencing the live database', /Fencing 'planetarion'/],
  ['SIGINT', 'after the rename', /Swapped: /],
] as const) {
  safety(
    `${signal} while ${phase}: the run stops at a safe point and the live database accepts connections`,
    async () => {
      assert.ok(ready, 'setup failed');
      const dir = temp.make();
      await setMarker(src, `backup-${phase}`);
      await backup(dir, src);
      await setMarker(src, `live-${phase}`);
      // A session on the live database, as the game keeps them: the fence must end it.
      execFileSync('docker', [
        'exec',
        '-d',
        src,
        'psql',
        '-U',
        'planetarion_user',
        '-d',
        'planetarion',
        '-c',
        'SELECT pg_sleep(60)',
      ]);
      const run = startTool('restore-database', ['latest', '--yes'], env(dir));
      let stderr = '';
      run.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      await waitFor(`'${line.source}' in the log`, () => line.test(stderr), 120_000, 5);
      run.child.kill(signal);
      const r = await run.done;
      assert.match(r.stderr, new RegExp(`Received ${signal}`));
      assert.ok(await acceptsConnections(src), `the live database refuses connections after ${signal}:\n${r.stderr}`);
      for (const name of (await databases(src)).filter((d) => d.includes('_previous_')))
        assert.ok(await acceptsConnections(src, name), name);
      assert.not.ok(
        (await databases(src)).some((d) => /_(restore|drill)_/.test(d)),
        (await databases(src)).join(),
      );
      // Undone before the commit (exit 1, the live data as it was) or finished after it (exit 0).
      assert.is(await marker(src), r.code === 0 ? `backup-${phase}` : `live-${phase}`, r.stderr);
      if (r.code !== 0) assert.match(r.stderr, new RegExp(`interrupted by ${signal}`));
      if (phase === 'after the rename') assert.is(r.code, 0, r.stderr);
    },
  );
}

safety(
  'the SSH session is lost while the live database is fenced: the run still stops at a safe point and the live database accepts connections',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    await setMarker(src, 'backup-lost-session');
    await backup(dir, src);
    await setMarker(src, 'live-lost-session');
    const sshd = await startSshd();
    try {
      const session = runInTerminal(sshd, env(dir), [join(distBin, 'restore-database'), 'latest', '--yes']);
      await waitFor("'Fencing' on the terminal", () => /Fencing 'planetarion'/.test(session.output()), 120_000, 5);
      const owner = JSON.parse(readFileSync(join(dir, lockFileName), 'utf8')) as LockOwner;
      // The client dies: sshd hangs up the terminal, the run gets SIGHUP, and every later write
      // to the terminal fails. It must still reach the safe point (killed by a failed write, it
      // would leave the live database fenced).
      session.lose();
      await waitFor(`the restore (pid ${owner.pid}) to end`, () => !ownerIsAlive(owner), 120_000, 50);
      const log = readFileSync(join(dir, 'logs', 'backup.log'), 'utf8');
      assert.match(log, /Received SIGHUP: stopping at the next safe point/);
      assert.ok(await acceptsConnections(src), `the live database refuses connections:\n${log}`);
      assert.not.ok(
        (await databases(src)).some((d) => /_(restore|drill)_/.test(d)),
        (await databases(src)).join(),
      );
      assert.ok(['backup-lost-session', 'live-lost-session'].includes(await marker(src)));
    } finally {
      await sshd.stop();
    }
  },
);

safety('a killed run leaves its scratch database: the next run drops it under the lock and logs it', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  await backup(dir, src);
  const leftovers = [
    'planetarion_restore_20200101_000000',
    'planetarion_drill_20200101_000000',
    'planetarion_stream_20200101_000000',
  ];
  for (const name of leftovers) await psql(src, `CREATE DATABASE ${name}`, { db: 'postgres' });
  const r = await runTool('restore-database', ['--test', 'latest'], env(dir));
  assert.is(r.code, 0, r.stderr);
  for (const name of leftovers)
    assert.match(r.stderr, new RegExp(`Dropped '${name}', a scratch database left behind by a run that was killed`));
  const left = await databases(src);
  assert.not.ok(
    left.some((d) => leftovers.includes(d)),
    left.join(),
  );
});

safety(
  "the restored database keeps the live one's encoding, locale provider, collation, owner, settings, ACL, connection limit and comment",
  async () => {
    assert.ok(ready, 'setup failed');
    await psql(
      props,
      `
    CREATE ROLE game_owner; CREATE ROLE game_app LOGIN;
    DROP DATABASE planetarion;
    CREATE DATABASE planetarion TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' OWNER game_owner CONNECTION LIMIT 42;
    COMMENT ON DATABASE planetarion IS 'Planetarion''s live game data';
    ALTER DATABASE planetarion SET work_mem = '12MB';
    ALTER DATABASE planetarion SET search_path = "$user", public, "Game Data";
    ALTER ROLE game_app IN DATABASE planetarion SET statement_timeout = '5s';
    REVOKE CONNECT, TEMPORARY ON DATABASE planetarion FROM PUBLIC;
    GRANT CONNECT ON DATABASE planetarion TO game_app WITH GRANT OPTION;
  `,
      { db: 'postgres' },
    );
    await seedPlanetarion(props, { scale: 0.1 });
    const sql = oneShotSql(createShell(), {
      docker: 'docker',
      container: props,
      user: 'planetarion_user',
      database: 'planetarion',
    });
    const before = (await readDatabaseProperties(sql, 'planetarion'))!;
    assert.is(before.localeProvider, 'icu');
    assert.is(before.collate, 'C');
    assert.is(before.owner, 'game_owner');
    assert.is(before.settings.length, 3);
    assert.ok(before.acl!.some((e) => e.grantee === 'game_app' && e.privilege === 'CONNECT' && e.grantable));
    assert.not.ok(before.acl!.some((e) => e.grantee === null));
    // Read over the fingerprint's session, and without the fingerprint by a psql of its own in the dump's exec.
    const offDir = temp.make();
    const off = await backup(offDir, props, { PLANETARION_FINGERPRINT: 'off' });
    assert.equal(JSON.parse(readFileSync(join(offDir, 'backups', `${off}.json`), 'utf8')).databaseProperties, before);
    const dir = temp.make();
    const file = await backup(dir, props);
    assert.equal(JSON.parse(readFileSync(join(dir, 'backups', `${file}.json`), 'utf8')).databaseProperties, before);
    // The manifest is what the restore follows: a change made to the live database since is undone.
    await psql(
      props,
      "COMMENT ON DATABASE planetarion IS 'changed after the backup'; ALTER DATABASE planetarion CONNECTION LIMIT 7;",
      { db: 'postgres' },
    );
    const drill = await runTool('restore-database', ['--test', 'latest'], env(dir, props));
    assert.is(drill.code, 0, drill.stderr);
    const r = await runTool('restore-database', ['latest', '--yes'], env(dir, props));
    assert.is(r.code, 0, r.stderr);
    assert.equal(await readDatabaseProperties(sql, 'planetarion'), before);
  },
);

safety(
  'a .sql.gz cut mid-COPY whose checksum matches the cut file: the load fails on the gzip stream, nothing is swapped',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const file = await backup(dir, src);
    await setMarker(src, 'live-before-cut');
    const sql = gunzipSync(readFileSync(join(dir, 'backups', file)));
    // Complete rows up to the middle of the chat_messages data, then the gzip stream just stops.
    const copyAt = sql.indexOf('COPY public.chat_messages ');
    const cutAt = sql.indexOf('\n', copyAt + Math.floor((sql.indexOf('\n\\.\n', copyAt) - copyAt) / 2)) + 1;
    const truncated = gzipSync(sql.subarray(0, cutAt), { finishFlush: constants.Z_SYNC_FLUSH });
    // Without a fingerprint (and so with --no-verify) only the gzip check stands between it and the live database.
    resealBackup(join(dir, 'backups', file), truncated, { fingerprint: null });
    const before = await fingerprintOf(src);
    const r = await runTool('restore-database', ['latest', '--yes', '--no-verify', '--json'], env(dir));
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /the gzip stream is broken \(gunzip exit 1\): nothing was committed/);
    assert.is(await marker(src), 'live-before-cut');
    assert.is(await fingerprintOf(src), before);
    assert.not.ok((await databases(src)).some((d) => d.includes('_restore_')));
  },
);

safety('a backup without a fingerprint is swapped in only with --no-verify; --test refuses --no-verify', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  await setMarker(src, 'unproven-backup');
  await backup(dir, src, { PLANETARION_FINGERPRINT: 'off' });
  await setMarker(src, 'live-unproven');
  const refused = await runTool('restore-database', ['latest', '--yes'], env(dir));
  assert.is(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /has no fingerprint .*pass --no-verify/);
  assert.match(refused.stderr, /was not changed/);
  const drill = await runTool('restore-database', ['--test', 'latest'], env(dir));
  assert.is(drill.code, 1, drill.stderr);
  const drillUnverified = await runTool('restore-database', ['--test', 'latest', '--no-verify'], env(dir));
  assert.is(drillUnverified.code, 2, drillUnverified.stderr);
  assert.is(await marker(src), 'live-unproven');
  const r = await runTool('restore-database', ['latest', '--yes', '--no-verify'], env(dir));
  assert.is(r.code, 0, r.stderr);
  assert.is(await marker(src), 'unproven-backup');
});

safety(
  'a database volume too small for a second copy: restore and drill refuse with the sizes, nothing created',
  async () => {
    assert.ok(ready, 'setup failed');
    // Rows of ~1 KB until 16 MB are left free: less than the grown database. Unlogged, so they take
    // room in the database but not in the WAL, which could otherwise fill the tmpfs and stop the server.
    const free =
      Number(
        /\n\S+\s+\d+\s+\d+\s+(\d+)/.exec(
          execFileSync('docker', ['exec', small, 'df', '-Pk', '/var/lib/postgresql/data'], { encoding: 'utf8' }),
        )![1],
      ) * 1024;
    const rows = Math.floor((free - 16 * 1024 * 1024) / 1050);
    await psql(
      small,
      `CREATE UNLOGGED TABLE filler AS SELECT g AS id, repeat(md5(g::text), 30) AS pad FROM generate_series(1, ${rows}) g`,
    );
    const dir = temp.make();
    await backup(dir, small);
    const before = await databases(small);
    for (const args of [
      ['latest', '--yes'],
      ['--test', 'latest'],
    ]) {
      const r = await runTool('restore-database', args, env(dir, small));
      assert.is(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /not enough free space on the database volume of '.*' \(\/var\/lib\/postgresql\/data\): [\d.]+ MB free, the restore needs about [\d.]+ MB \(the size of 'planetarion'/,
      );
      assert.equal(await databases(small), before);
    }
  },
);

safety('a backup of another database is refused unless --other-database says so', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  await backup(dir, src);
  await psql(src, 'DROP DATABASE IF EXISTS planetarion_staging; CREATE DATABASE planetarion_staging', {
    db: 'postgres',
  });
  await psql(src, "CREATE TABLE staging_only (note text); INSERT INTO staging_only VALUES ('staging')", {
    db: 'planetarion_staging',
  });
  const staging = env(dir, src, { PLANETARION_DB_NAME: 'planetarion_staging' });
  const refused = await runTool('restore-database', ['latest', '--yes'], staging);
  assert.is(refused.code, 1, refused.stderr);
  assert.match(
    refused.stderr,
    /is a backup of database 'planetarion', not of 'planetarion_staging' \(pass --other-database/,
  );
  assert.is(await psql(src, 'SELECT note FROM staging_only', { db: 'planetarion_staging' }), 'staging');
  const r = await runTool('restore-database', ['latest', '--yes', '--other-database'], staging);
  assert.is(r.code, 0, r.stderr);
  assert.is(await fingerprintOf(src, 'planetarion_staging'), await fingerprintOf(src));
});

safety(
  'a table row shaped like a setval() line does not enter the fingerprint: the drill proves the backup',
  async () => {
    assert.ok(ready, 'setup failed');
    await psql(
      src,
      "CREATE TABLE audit_lines (line text); INSERT INTO audit_lines VALUES ('SELECT pg_catalog.setval(''public.fake_seq'', 5, true);')",
    );
    try {
      const dir = temp.make();
      const file = await backup(dir, src);
      const manifest = JSON.parse(readFileSync(join(dir, 'backups', `${file}.json`), 'utf8'));
      assert.not.ok(manifest.fingerprint.sequences.some((s: { name: string }) => s.name === 'public.fake_seq'));
      const r = await runTool('restore-database', ['--test', 'latest'], env(dir));
      assert.is(r.code, 0, r.stderr);
    } finally {
      await psql(src, 'DROP TABLE audit_lines');
    }
  },
);

safety("encrypted backups: psql's quotes of row data never reach the log, stderr or the diagnostics", async () => {
  assert.ok(ready, 'setup failed');
  const keys = temp.make('planetarion-safety-keys-');
  const keyFile = join(keys, 'key.txt');
  execFileSync('age-keygen', ['-o', keyFile], { stdio: 'ignore' });
  const recipient = execFileSync('age-keygen', ['-y', keyFile], { encoding: 'utf8' }).trim();
  const secrets = ['secret-number-Zq81', 'secret-mail-Kx42@example.org'];
  for (const [i, secret] of secrets.entries()) {
    const dir = temp.make();
    const file = await backup(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient });
    const path = join(dir, 'backups', file);
    const sql = gunzipSync(execFileSync('age', ['-d', '-i', keyFile, path])).toString('utf8');
    const copyAt = sql.indexOf('COPY public.users ');
    const rowAt = sql.indexOf('\n', copyAt) + 1;
    const row = sql.slice(rowAt, sql.indexOf('\n', rowAt)).split('\t');
    // A value no integer column takes, or an email another row already has (the unique index fails).
    if (i === 0) row[0] = secret;
    else row[2] = secret;
    const changed =
      i === 0 ? row.join('\t') : `${row.join('\t')}\n${row.map((v, k) => (k === 0 ? '999999' : v)).join('\t')}`;
    const edited = sql.slice(0, rowAt) + changed + sql.slice(sql.indexOf('\n', rowAt));
    const encrypted = execFileSync('age', ['-r', recipient], { input: gzipSync(Buffer.from(edited)) });
    resealBackup(path, encrypted);
    const r = await runTool(
      'restore-database',
      ['latest', '--yes', '--identity', keyFile],
      env(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient }),
    );
    assert.is(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      i === 0 ? /invalid input syntax for type bigint: "\[redacted: row data\]"/ : /could not create unique index/,
    );
    assert.match(r.stderr, /\[redacted: row data\]/);
    const log = readFileSync(join(dir, 'logs/backup.log'), 'utf8');
    const diagnostics = readFileSync(join(dir, 'logs', debugFiles(dir)[0]!), 'utf8');
    for (const text of [r.stderr, log, diagnostics]) assert.not.ok(text.includes(secret), `row data in:\n${text}`);
  }
});

safety.after(async () => {
  await Promise.all([removeDb(src), removeDb(props), removeDb(small)]);
  temp.removeAll();
});

safety.run();
