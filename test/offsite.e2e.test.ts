// Off-site copies end to end: the built backup-database / restore-database against real
// PostgreSQL containers and a real S3 server (s3rver) on loopback, behind a fault-injecting proxy.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, waitFor, type ToolResult } from './helpers/cli.ts';
import { psql, removeDb, scratchName, seedPlanetarion, startDb } from './helpers/db.ts';
import {
  s3Credentials,
  startFaultProxy,
  startS3,
  type Fault,
  type FaultProxy,
  type RequestInfo,
  type TestS3,
} from './helpers/s3.ts';
import { TempDirs } from './helpers/tmp.ts';

const db = scratchName('pb-offsite');
const big = scratchName('pb-offsite-big');
const temp = new TempDirs('planetarion-offsite-');
let s3: TestS3;
let proxy: FaultProxy;
let ready = false;
let prefixes = 0;

const backupPattern = /^planetarion_backup_\d{8}_\d{6}\.(sql\.gz|sql|dump)(\.age)?$/;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const localBackups = (dir: string) =>
  existsSync(join(dir, 'backups'))
    ? readdirSync(join(dir, 'backups'))
        .filter((f) => backupPattern.test(f))
        .sort()
    : [];
const logOf = (dir: string) => readFileSync(join(dir, 'logs/backup.log'), 'utf8');
const statusOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8'));

/** A fresh NAS folder and prefix; `env` is what cron would run the tools with. */
function nas(extra: Record<string, string> = {}) {
  const dir = temp.make();
  const prefix = `nas-${++prefixes}/backups`;
  const env = {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: db,
    PLANETARION_OFFSITE: `s3://${s3.bucket}/${prefix}`,
    PLANETARION_S3_ENDPOINT: proxy.endpoint,
    ...s3Credentials,
    HOME: dir,
    ...extra,
  };
  /** The keys under the prefix, without it. */
  const remote = () =>
    s3
      .keys()
      .filter((k) => k.startsWith(`${prefix}/`))
      .map((k) => k.slice(prefix.length + 1));
  return { dir, prefix, env, remote, remoteBackups: () => remote().filter((k) => backupPattern.test(k)) };
}

/** The local backup and its sidecars are byte for byte what the server stores. */
function assertByteExact(dir: string, prefix: string, name: string): void {
  for (const file of [name, `${name}.json`, `${name}.sha256`]) {
    const local = readFileSync(join(dir, 'backups', file));
    assert.ok(s3.read(`${prefix}/${file}`).equals(local), `${file} differs off-site`);
  }
}

function assertAbsent(secret: string, dir: string, ...results: ToolResult[]): void {
  for (const text of [
    logOf(dir),
    readFileSync(join(dir, 'status.json'), 'utf8'),
    ...results.flatMap((r) => [r.stdout, r.stderr]),
  ])
    assert.not.ok(text.includes(secret), `'${secret}' in output`);
}

/**
 * Runs a tool once the database container is healthy: with several test runs sharing two cores,
 * the image's health check times out now and then, and backup-database rightly refuses then.
 */
async function tool(command: string, args: string[], env: Record<string, string | undefined>): Promise<ToolResult> {
  const container = env.PLANETARION_DB_CONTAINER;
  if (container && !args.includes('--status')) {
    const health = () =>
      execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', container], { encoding: 'utf8' }).trim();
    await waitFor(`${container} to be healthy`, () => health() === 'healthy', 300_000, 1000);
  }
  return runTool(command, args, env);
}

/** Runs `run` with the proxy applying `rule` to every request, then lets everything pass again. */
async function withFault<T>(rule: (request: RequestInfo) => Fault, run: () => Promise<T>): Promise<T> {
  proxy.rule = rule;
  try {
    return await run();
  } finally {
    proxy.rule = () => 'pass';
  }
}

const offsite = suite('off-site copies (S3)');

offsite.before(async () => {
  s3 = await startS3();
  proxy = await startFaultProxy(s3);
});

offsite('setup: a seeded database and one whose backup needs a multipart upload', async () => {
  // Generous: five test runs may share the machine's two cores.
  await Promise.all([startDb(db, { timeoutMs: 240_000 }), startDb(big, { timeoutMs: 240_000 })]);
  await seedPlanetarion(db, { scale: 1 });
  // Random hex compresses to about half: a ~20 MB .sql.gz, three 8 MiB parts.
  await psql(big, 'CREATE TABLE bulk (id int, payload text);');
  for (let batch = 0; batch < 6; batch++) {
    const fill = `SET max_parallel_workers_per_gather = 0; INSERT INTO bulk SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series(${batch * 100_000 + 1}, ${(batch + 1) * 100_000}) g;`;
    // On a heavily loaded test machine a backend has crashed here; the server then recovers on its own.
    await psql(big, fill).catch(async () => {
      await waitFor(
        `${big} to recover`,
        () =>
          psql(big, 'SELECT 1').then(
            () => true,
            () => false,
          ),
        300_000,
        2000,
      );
      await psql(big, fill);
    });
  }
  ready = true;
});

offsite(
  'uploads the backup, its manifest and .sha256 byte-exact with the sha256 as metadata; status.json and --status say so',
  async () => {
    assert.ok(ready, 'setup failed');
    const { dir, prefix, env, remote } = nas();
    const r = await tool('backup-database', ['--json'], env);
    assert.is(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(remote(), [summary.file, `${summary.file}.json`, `${summary.file}.sha256`].sort());
    assertByteExact(dir, prefix, summary.file);
    assert.is(s3.metadata(`${prefix}/${summary.file}`).sha256, summary.sha256);
    assert.equal(summary.offsite.uploaded, [summary.file]);
    assert.is(summary.offsite.ok, true);
    const status = statusOf(dir);
    assert.is(status.offsite.lastRun.ok, true);
    assert.equal(status.offsite.lastRun.uploaded, [summary.file]);
    assert.match(
      logOf(dir),
      new RegExp(`Off-site copy of ${summary.file} confirmed \\(size, sha256, server checksum\\)`),
    );
    assert.match(logOf(dir), /WARN - The off-site copy of .* is not encrypted/);
    const human = await tool('backup-database', ['--status'], env);
    assert.is(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`${summary.file}  off-site ok`));
    assert.match(human.stdout, /WARNING: 1 off-site backup\(s\) are not encrypted/);
  },
);

offsite(
  'a multipart upload (three parts) survives a 5xx on one part (the SDK retries it) and is byte-exact',
  async () => {
    assert.ok(ready, 'setup failed');
    const { dir, prefix, env } = nas({ PLANETARION_DB_CONTAINER: big, PLANETARION_FINGERPRINT: 'off' });
    let failed = 0;
    const r = await withFault(
      (q) =>
        q.method === 'PUT' && q.query.get('partNumber') === '2' && failed++ === 0
          ? { status: 503, code: 'SlowDown' }
          : 'pass',
      () => tool('backup-database', ['--json'], env),
    );
    assert.is(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.ok(summary.size > 16 * 1024 * 1024, `the backup is only ${summary.size} bytes: not three parts`);
    assert.is(failed, 2, 'part 2 was not retried after the 503');
    assertByteExact(dir, prefix, summary.file);
  },
);

offsite(
  'off-site rotation keeps the newest PLANETARION_OFFSITE_KEEP complete copies and never touches other objects',
  async () => {
    assert.ok(ready, 'setup failed');
    const { dir, prefix, env, remote, remoteBackups } = nas({
      PLANETARION_OFFSITE_KEEP: '2',
      PLANETARION_KEEP: '5',
      PLANETARION_FINGERPRINT: 'off',
    });
    const foreign = [
      'notes.txt',
      'planetarion_backup_20200101_000000.sql.gz.bak',
      'sub/planetarion_backup_20200101_000000.sql.gz',
    ];
    for (const key of foreign) await s3.put(`${prefix}/${key}`, 'not ours');
    await s3.put(`nas-elsewhere/planetarion_backup_20200101_000000.sql.gz`, 'another prefix');
    const made: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await tool('backup-database', ['--json'], env);
      assert.is(r.code, 0, r.stderr);
      made.push(JSON.parse(r.stdout).file);
    }
    assert.equal(localBackups(dir), [...made].sort());
    assert.equal(remoteBackups(), made.slice(1).sort());
    for (const key of foreign) assert.ok(remote().includes(key), `${key} was touched`);
    assert.ok(s3.keys().includes('nas-elsewhere/planetarion_backup_20200101_000000.sql.gz'));
    assert.match(logOf(dir), new RegExp(`Off-site rotation: removed ${made[0]} \\(keeping the newest 2\\)`));
    const listing = await tool('backup-database', ['--status', '--offsite', '--json'], env);
    assert.is(listing.code, 0, listing.stderr);
    const report = JSON.parse(listing.stdout).offsite;
    assert.equal(
      report.remote.map((b: { file: string }) => b.file),
      made.slice(1).reverse(),
    );
    assert.ok(report.remote.every((b: { complete: boolean }) => b.complete));
    assert.is(report.foreign, 2, 'notes.txt and the .bak (the sub-prefix is not listed)');
    assert.equal(
      report.local.map((b: { offsite: string }) => b.offsite),
      ['copied', 'copied', 'beyond keep'],
    );
    // The next run neither uploads the local backup that off-site rotation removed nor removes anything else.
    const next = await tool('backup-database', ['--json'], env);
    assert.is(next.code, 0, next.stderr);
    const summary = JSON.parse(next.stdout);
    assert.equal(summary.offsite.uploaded, [summary.file]);
    assert.equal(summary.offsite.rotated, [made[1]]);
  },
);

offsite(
  'the server down during a backup: the local backup is good, exit 1 saying so, status.json and the ping say fail; the next run catches up',
  async () => {
    assert.ok(ready, 'setup failed');
    const hits: string[] = [];
    const ping = createServer((req, res) => {
      hits.push(req.url!);
      res.end('OK');
    });
    await new Promise<void>((resolve) => ping.listen(0, '127.0.0.1', resolve));
    const { dir, prefix, env, remoteBackups } = nas({
      PLANETARION_PING_URL: `http://127.0.0.1:${(ping.address() as { port: number }).port}/p`,
      PLANETARION_S3_TIMEOUT: '3',
    });
    let down: ToolResult;
    await proxy.down();
    try {
      down = await tool('backup-database', [], env);
    } finally {
      await proxy.up();
    }
    const [first] = localBackups(dir);
    assert.is(down.code, 1, down.stderr);
    assert.ok(first, 'no local backup');
    assert.match(
      down.stderr,
      new RegExp(
        `off-site copy to s3://${s3.bucket}/${prefix} failed: cannot connect to http://127\\.0\\.0\\.1:\\d+: connection refused`,
      ),
    );
    assert.match(down.stderr, new RegExp(`The local backup ${first} is good`));
    const status = statusOf(dir);
    assert.is(status.lastRun.ok, true);
    assert.is(status.offsite.lastRun.ok, false);
    assert.equal(status.offsite.lastRun.pending, [first]);
    assert.equal(remoteBackups(), []);
    const up = await tool('backup-database', ['--json'], env);
    assert.is(up.code, 0, up.stderr);
    const second = JSON.parse(up.stdout).file;
    assert.equal(JSON.parse(up.stdout).offsite.uploaded, [second, first]);
    assert.equal(remoteBackups(), [first, second].sort());
    assertByteExact(dir, prefix, first!);
    // Each run pings /start first (healthchecks-style), then its outcome.
    assert.equal(hits, ['/p/start', '/p/fail', '/p/start', '/p']);
    ping.close();
  },
);

offsite(
  '5xx on every attempt of a part mid-multipart: no object counts as a copy, exit 1; the next run uploads it',
  async () => {
    assert.ok(ready, 'setup failed');
    const { dir, prefix, env, remote } = nas({ PLANETARION_DB_CONTAINER: big, PLANETARION_FINGERPRINT: 'off' });
    const r = await withFault(
      (q) =>
        q.method === 'PUT' && q.query.get('partNumber') === '2' ? { status: 500, code: 'InternalError' } : 'pass',
      () => tool('backup-database', [], env),
    );
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /failed with HTTP 500 \(InternalError\) after 3 attempts/);
    const [name] = localBackups(dir);
    assert.equal(remote(), [], 'a partial upload is visible');
    assert.ok(
      proxy.seen.some((q) => q.method === 'DELETE' && q.query.has('uploadId')),
      'the multipart upload was not aborted',
    );
    const status = await tool('backup-database', ['--status'], env);
    assert.match(status.stdout, new RegExp(`${name}  OFF-SITE MISSING`));
    const again = await tool('backup-database', ['--json'], env);
    assert.is(again.code, 0, again.stderr);
    assertByteExact(dir, prefix, name!);
  },
);

offsite(
  'a part that stalls (timeout) mid-multipart: exit 1 within the timeout budget, no object counts as a copy',
  async () => {
    assert.ok(ready, 'setup failed');
    const { dir, env, remote } = nas({
      PLANETARION_DB_CONTAINER: big,
      PLANETARION_FINGERPRINT: 'off',
      PLANETARION_S3_TIMEOUT: '2',
    });
    const started = Date.now();
    const r = await withFault(
      (q) => (q.method === 'PUT' && q.query.get('partNumber') === '2' ? 'stall' : 'pass'),
      () => tool('backup-database', [], env),
    );
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /did not answer within 2 s, 3 attempts \(PLANETARION_S3_TIMEOUT\)/);
    assert.ok(Date.now() - started < 90_000, 'the stall was not cut off');
    assert.is(localBackups(dir).length, 1);
    assert.equal(
      remote().filter((k) => backupPattern.test(k)),
      [],
    );
  },
);

// The proxy checks every SigV4 signature (s3rver itself does not): a wrong secret gets S3's 403.
offsite('wrong credentials: a clear error, the secret nowhere, nothing deleted off-site', async () => {
  assert.ok(ready, 'setup failed');
  const { dir, env, remote } = nas({ PLANETARION_OFFSITE_KEEP: '1', PLANETARION_FINGERPRINT: 'off' });
  assert.is((await tool('backup-database', [], env)).code, 0);
  const before = remote();
  const wrongSecret = 'wrong-secret-7f3a9c';
  const r = await tool('backup-database', [], { ...env, AWS_SECRET_ACCESS_KEY: wrongSecret });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /rejected the request signature: the secret key \(AWS_SECRET_ACCESS_KEY\) is wrong/);
  assert.match(r.stderr, /The local backup planetarion_backup_\d{8}_\d{6}\.sql\.gz is good/);
  assert.equal(remote(), before);
  const unknownKey = await tool('backup-database', ['--dry-run'], { ...env, AWS_ACCESS_KEY_ID: 'NOSUCHKEY' });
  assert.is(unknownKey.code, 1);
  assert.match(unknownKey.stderr, /off-site check failed: .* does not know the access key \(AWS_ACCESS_KEY_ID\)/);
  assertAbsent(wrongSecret, dir, r);
  const none = await tool('backup-database', [], {
    ...env,
    AWS_ACCESS_KEY_ID: undefined as unknown as string,
    AWS_SECRET_ACCESS_KEY: undefined as unknown as string,
  });
  assert.is(none.code, 1);
  assert.match(
    none.stderr,
    /no S3 credentials for s3:\/\/.*: AWS_ACCESS_KEY_ID is not set and the credentials file .*\.aws\/credentials does not exist/,
  );
  assert.equal(remote(), before);
});

offsite(
  'credentials from a credentials file (AWS_SHARED_CREDENTIALS_FILE in planetarion.env); AccessDenied on delete makes rotation a warning',
  async () => {
    assert.ok(ready, 'setup failed');
    const { dir, env, remoteBackups } = nas({ PLANETARION_OFFSITE_KEEP: '1', PLANETARION_FINGERPRINT: 'off' });
    const credentials = join(dir, 's3-credentials');
    writeFileSync(
      credentials,
      `[default]\naws_access_key_id = ${s3Credentials.AWS_ACCESS_KEY_ID}\naws_secret_access_key = ${s3Credentials.AWS_SECRET_ACCESS_KEY}\n`,
      { mode: 0o600 },
    );
    writeFileSync(join(dir, 'planetarion.env'), `AWS_SHARED_CREDENTIALS_FILE=${credentials}\n`);
    const fileEnv = {
      ...env,
      AWS_ACCESS_KEY_ID: undefined as unknown as string,
      AWS_SECRET_ACCESS_KEY: undefined as unknown as string,
    };
    assert.is((await tool('backup-database', [], fileEnv)).code, 0);
    const r = await withFault(
      (q) => (q.method === 'DELETE' ? { status: 403, code: 'AccessDenied' } : 'pass'),
      () => tool('backup-database', ['--json'], fileEnv),
    );
    assert.is(r.code, 0, r.stderr);
    assert.is(remoteBackups().length, 2);
    assert.match(
      JSON.parse(r.stdout).offsite.warnings.join('\n'),
      /Off-site rotation skipped: the credentials may not delete/,
    );
    assert.match(logOf(dir), /WARN - Off-site rotation skipped/);
  },
);

offsite(
  'a deleted remote object is reported by --status and uploaded again by the next run while the local file exists',
  async () => {
    assert.ok(ready, 'setup failed');
    const { dir, prefix, env } = nas({ PLANETARION_FINGERPRINT: 'off' });
    const r = await tool('backup-database', ['--json'], env);
    assert.is(r.code, 0, r.stderr);
    const name = JSON.parse(r.stdout).file;
    s3.remove(`${prefix}/${name}`);
    const status = await tool('backup-database', ['--status', '--json'], env);
    assert.equal(JSON.parse(status.stdout).offsite.local, [{ file: name, offsite: 'missing' }]);
    s3.remove(`${prefix}/${name}.json`);
    const human = await tool('backup-database', ['--status', '--offsite'], env);
    assert.match(human.stdout, new RegExp(`${name}  OFF-SITE MISSING \\(the next backup run uploads it\\)`));
    assert.match(human.stdout, new RegExp(`${name} +- .* INCOMPLETE`));
    const next = await tool('backup-database', ['--json'], env);
    assert.is(next.code, 0, next.stderr);
    assert.ok(JSON.parse(next.stdout).offsite.uploaded.includes(name));
    assertByteExact(dir, prefix, name);
  },
);

offsite(
  'restore-database --from-offsite latest into an empty NAS folder: downloaded byte-exact, restored and proven; --test --from-offsite is the drill',
  async () => {
    assert.ok(ready, 'setup failed');
    const source = nas();
    const made = await tool('backup-database', ['--json'], source.env);
    assert.is(made.code, 0, made.stderr);
    const name = JSON.parse(made.stdout).file;
    const target = scratchName('pb-offsite-new');
    try {
      await startDb(target, { timeoutMs: 240_000 });
      const fresh = temp.make();
      const env = { ...source.env, PLANETARION_DIR: fresh, PLANETARION_DB_CONTAINER: target };
      const drill = await tool('restore-database', ['--test', '--from-offsite', 'latest'], env);
      assert.is(drill.code, 0, drill.stderr);
      assert.match(drill.stderr, new RegExp(`Downloaded ${name}: sha256 [0-9a-f]{64} verified`));
      assert.match(drill.stderr, /Restore drill passed/);
      assert.equal(localBackups(fresh), [], 'the drill left a backup behind');
      assert.equal(readdirSync(join(fresh, 'backups')), [], 'the drill left its download folder');
      const r = await tool('restore-database', ['--from-offsite', 'latest', '--yes'], env);
      assert.is(r.code, 0, r.stderr);
      assert.match(r.stderr, /Restore completed/);
      assert.equal(localBackups(fresh), [name]);
      for (const file of [name, `${name}.json`, `${name}.sha256`]) {
        assert.ok(
          readFileSync(join(fresh, 'backups', file)).equals(readFileSync(join(source.dir, 'backups', file))),
          `${file} differs`,
        );
        assert.is(statSync(join(fresh, 'backups', file)).mode & 0o777, 0o600);
      }
      assert.is(await psql(target, 'SELECT count(*) FROM users'), await psql(db, 'SELECT count(*) FROM users'));
    } finally {
      await removeDb(target);
    }
  },
);

offsite('a tampered off-site copy is refused before any database is touched', async () => {
  assert.ok(ready, 'setup failed');
  const { dir, prefix, env } = nas({ PLANETARION_FINGERPRINT: 'off' });
  const made = await tool('backup-database', ['--json'], env);
  const summary = JSON.parse(made.stdout);
  const bytes = s3.read(`${prefix}/${summary.file}`);
  bytes[bytes.length >> 1] ^= 0xff;
  await s3.put(`${prefix}/${summary.file}`, bytes, { sha256: summary.sha256 });
  const marker = `offsite-${Date.now()}`;
  await psql(
    db,
    `CREATE TABLE IF NOT EXISTS offsite_marker (v text); INSERT INTO offsite_marker VALUES ('${marker}');`,
  );
  const r = await tool('restore-database', ['--from-offsite', summary.file, '--yes'], {
    ...env,
    PLANETARION_BACKUP_DIR: join(temp.make(), 'backups'),
  });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`the off-site copy of ${summary.file} does not match its checksum`));
  assert.match(await psql(db, 'SELECT v FROM offsite_marker'), new RegExp(marker));
  assert.is(sha256(readFileSync(join(dir, 'backups', summary.file))), summary.sha256, 'the local backup was touched');
  await psql(db, 'DROP TABLE offsite_marker');
});

offsite('bad off-site settings exit 2 naming the setting; --help lists every off-site setting', async () => {
  const dir = temp.make();
  for (const [env, message] of [
    [{ PLANETARION_OFFSITE: 'http://bucket/x' }, /PLANETARION_OFFSITE 'http:\/\/bucket\/x': s3:\/\/BUCKET/],
    [{ PLANETARION_OFFSITE: 's3://b/a//c' }, /PLANETARION_OFFSITE/],
    [{ PLANETARION_OFFSITE_KEEP: '0' }, /PLANETARION_OFFSITE_KEEP '0'/],
    [{ PLANETARION_S3_PATH_STYLE: 'yes' }, /PLANETARION_S3_PATH_STYLE 'yes': 'on' or 'off'/],
    [{ PLANETARION_S3_ENDPOINT: 'ftp://x' }, /PLANETARION_S3_ENDPOINT/],
  ] as const) {
    const r = await runTool('backup-database', [], { PLANETARION_DIR: dir, ...env });
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  const help = await runTool('backup-database', ['--help'], {});
  for (const name of [
    'PLANETARION_OFFSITE',
    'PLANETARION_S3_ENDPOINT',
    'PLANETARION_S3_REGION',
    'PLANETARION_S3_PATH_STYLE',
    'PLANETARION_OFFSITE_KEEP',
    'PLANETARION_S3_TIMEOUT',
    'AWS_SHARED_CREDENTIALS_FILE',
    'AWS_ACCESS_KEY_ID',
    'AWS_SECRET_ACCESS_KEY',
  ]) {
    assert.match(help.stdout, name);
  }
  assert.match((await runTool('restore-database', ['--help'], {})).stdout, /--from-offsite latest\|NAME/);
});

offsite.after(async () => {
  await proxy?.down();
  await s3?.stop();
  await Promise.all([removeDb(db), removeDb(big)]);
  temp.removeAll();
});

offsite.run();
