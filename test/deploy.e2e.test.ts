// deploy-to-qnap --local end to end: real Docker Compose stacks with a writing app, real backups
// and restores. The workstation side (SSH) is tested in ssh.e2e.test.ts and deploy-remote.e2e.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, waitFor } from './helpers/cli.ts';
import { containersOf, makeTestNas, sqlIn, startOldScriptStack, type TestNas } from './helpers/stack.ts';

const nases: TestNas[] = [];
function nas(): TestNas {
  const n = makeTestNas();
  nases.push(n);
  return n;
}

/** Removes every test stack made so far (containers, volumes, dirs). */
function cleanAll(): void {
  while (nases.length) nases.pop()!.cleanup();
}

const deploy = (n: TestNas, args: string[] = []) =>
  runTool('deploy-to-qnap', ['--local', '--json', '--health-timeout', '180', ...n.deployArgs, ...args], n.env);
const liveWrites = (n: TestNas) => Number(sqlIn(n.container, 'SELECT count(*) FROM app_writes'));
const appHealthy = (n: TestNas) =>
  execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', `${n.project}-app`])
    .toString()
    .trim();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const first = suite('deploy-to-qnap: first deployment and A-B over a live one');

first('first deployment onto an empty NAS dir: stack up and healthy, state recorded', async () => {
  const n = nas();
  const r = await deploy(n);
  assert.is(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  assert.is(result.mode, 'first');
  assert.equal(containersOf(n.project), { [n.container]: 'running', [`${n.project}-app`]: 'running' });
  assert.is(appHealthy(n), 'healthy');
  const state = JSON.parse(readFileSync(join(n.dir, 'deploy/state.json'), 'utf8'));
  assert.equal(
    state.live.containers.map((c: { name: string }) => c.name).sort(),
    [n.container, `${n.project}-app`].sort(),
  );
  assert.is(state.lastDeploy.ok, true);
  // The backup job went into QNAP's persistent crontab, and cron was reloaded.
  const crontab = readFileSync(n.qnap.crontab, 'utf8');
  assert.ok(crontab.startsWith('# QNAP crontab\n0 4 * * * /sbin/hwclock -s\n'));
  assert.match(
    crontab,
    new RegExp(
      `^0 2,10,18 \\* \\* \\* .*${n.dir}/backup-database >> ${n.dir}/logs/backup.log 2>&1 # planetarion-backup:backup$`,
      'm',
    ),
  );
  // crontab -l first: a line only the running cron holds (the old scripts') is taken over too.
  assert.equal(n.qnap.calls().slice(0, 3), ['crontab -l', `crontab ${n.qnap.crontab}`, 'crond.sh restart']);
});

first(
  'second deployment over a live one: every row the writers wrote is live, the old slot is stopped and kept, the cron backup backs up the new database',
  async () => {
    const n = nas();
    assert.is((await deploy(n)).code, 0);
    await sleep(1500);
    // The dump flow (the online one is deploy-online.e2e's).
    const r = await deploy(n, ['--offline']);
    assert.is(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.is(result.mode, 'ab');
    assert.is(result.attempts.length, 1);
    assert.ok(result.downtimeMs > 0);
    // The fresh dump was restored into the new slot while it was written, and nothing is left beside it.
    assert.match(
      r.stderr,
      new RegExp(`Restored ${result.backupUsed.replace(/\./g, '\\.')} into 'planetarion_stream_\\d{8}_\\d{6}'`),
    );
    assert.is(sqlIn(n.container, "SELECT count(*) FROM pg_database WHERE datname LIKE 'planetarion\\_%'"), '0');
    const old = result.previous.containers.find((c: { service: string }) => c.service === 'db').name as string;
    assert.is(containersOf(n.project)[old], 'exited');
    // Every row the old slot's writer committed is in the new live database.
    execFileSync('docker', ['start', old]);
    await sleep(3000);
    const oldOrigins = sqlIn(old, 'SELECT origin, count(*) FROM app_writes GROUP BY 1 ORDER BY 1');
    const oldOrigin = oldOrigins.split('\n')[0]!.split('|');
    assert.ok(Number(oldOrigin[1]) > 0);
    assert.is(sqlIn(n.container, `SELECT count(*) FROM app_writes WHERE origin = '${oldOrigin[0]}'`), oldOrigin[1]);
    execFileSync('docker', ['stop', old]);
    // The new app writes to the new live database.
    const before = liveWrites(n);
    await sleep(1500);
    assert.ok(liveWrites(n) > before);
    // The cron line itself, run as cron runs it (bare environment), backs up the new live database.
    const cronLine = readFileSync(n.qnap.crontab, 'utf8')
      .split('\n')
      .find((l) => l.endsWith('# planetarion-backup:backup'))!;
    const command = cronLine.split(/\s+/).slice(5).join(' ');
    const backupsBefore = readdirSync(join(n.dir, 'backups')).length;
    execFileSync('env', ['-i', 'PATH=/usr/bin:/bin', 'sh', '-c', command]);
    const newest = readdirSync(join(n.dir, 'backups'))
      .filter((f) => /\.sql\.gz$/.test(f))
      .sort()
      .pop()!;
    assert.is(readdirSync(join(n.dir, 'backups')).length, backupsBefore + 3);
    const manifest = JSON.parse(readFileSync(join(n.dir, 'backups', `${newest}.json`), 'utf8'));
    assert.is(manifest.container, n.container);
    assert.ok(
      manifest.fingerprint.tables.find((t: { table: string }) => t.table === 'app_writes').rows > Number(oldOrigin[1]),
    );

    // --rollback makes the previous slot live again.
    const back = await runTool(
      'deploy-to-qnap',
      ['--local', '--rollback', '--health-timeout', '180', ...n.deployArgs],
      n.env,
    );
    assert.is(back.code, 0, back.stderr);
    const state = JSON.parse(readFileSync(join(n.dir, 'deploy/state.json'), 'utf8'));
    assert.is(state.live.project, result.previous.project);
    assert.is(containersOf(n.project)[n.container], 'running');
    // The old slot's data is live again (its writer resumed: at least as many rows), and what the
    // new slot wrote since the switch was backed up first.
    assert.ok(
      Number(sqlIn(n.container, `SELECT count(*) FROM app_writes WHERE origin = '${oldOrigin[0]}'`)) >=
        Number(oldOrigin[1]),
    );
    assert.match(back.stderr, /Backed up the current live database before rolling back/);
    // The current slot was fenced for that backup, and the pinned backup holds every row its database kept.
    assert.match(back.stderr, /Fence: .* takes no writes/);
    const pinned = JSON.parse(readFileSync(`${state.lastDeploy.pinnedBackup}.json`, 'utf8'));
    const rolledAway = state.previous.containers.find((c: { service: string }) => c.service === 'db').name as string;
    execFileSync('docker', ['start', rolledAway]);
    try {
      await waitFor(
        `${rolledAway} to answer`,
        () => {
          try {
            return sqlIn(rolledAway, 'SELECT 1') === '1';
          } catch {
            return false;
          }
        },
        300_000,
        300,
      );
      assert.is(
        pinned.fingerprint.tables.find((t: { table: string }) => t.table === 'app_writes').rows,
        Number(sqlIn(rolledAway, 'SELECT count(*) FROM app_writes')),
      );
    } finally {
      execFileSync('docker', ['stop', rolledAway]);
    }
  },
);

first(
  'a deployment started by the old script (plain compose up) is recognised as the live slot and upgraded without losing data',
  async () => {
    const n = nas();
    startOldScriptStack(n);
    const r = await deploy(n);
    assert.is(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.is(result.mode, 'ab');
    assert.is(result.previous.managed, false);
    assert.is(containersOf(n.project)[`${n.project}_app_1-${result.previous.slotId}`], 'exited');
    const legacyRows = sqlIn(
      n.container,
      'SELECT count(*) FROM app_writes WHERE origin <> (SELECT origin FROM app_writes ORDER BY id DESC LIMIT 1)',
    );
    assert.ok(Number(legacyRows) > 0);
  },
);
first.after(cleanAll);
first.run();

const faults = suite('deploy-to-qnap: faults leave the live slot serving');

function corrupt(path: string): void {
  const bytes = readFileSync(path);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  writeFileSync(path, bytes);
}

faults('the newest existing backup corrupted: the fresh backup wins', async () => {
  const n = nas();
  assert.is((await deploy(n)).code, 0);
  const older = await runTool('backup-database', ['--json'], n.env);
  corrupt(join(n.dir, 'backups', JSON.parse(older.stdout).file));
  await sleep(1100);
  // --dry-run prints the plan and changes nothing.
  const liveBefore = containersOf(n.project);
  const dry = await runTool('deploy-to-qnap', ['--local', '--dry-run', '--offline', ...n.deployArgs], n.env);
  assert.is(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /stop the live writers \(.*-app\) and take a fresh backup/);
  assert.match(dry.stdout, /switch: /);
  assert.equal(containersOf(n.project), liveBefore);
  // The backup, its manifest and checksum (and the folder's hidden sequence file): the dry run added nothing.
  assert.is(readdirSync(join(n.dir, 'backups')).filter((f) => !f.startsWith('.')).length, 3);
  const r = await deploy(n, ['--offline']);
  assert.is(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  assert.is(result.attempts.length, 1);
  assert.ok(result.attempts[0].ok);
  assert.is.not(result.backupUsed, JSON.parse(older.stdout).file);
});

faults(
  'the fresh backup unrestorable in the new slot: stops before switching unless --accept-older-backup; with it an older backup wins and the summary says why',
  async () => {
    const n = nas();
    assert.is((await deploy(n)).code, 0);
    const older = JSON.parse((await runTool('backup-database', ['--json'], n.env)).stdout).file as string;
    await sleep(1100);
    // After the older backup: an object owned by a role the new slot's server does not have.
    sqlIn(
      n.container,
      'CREATE ROLE game_admin; CREATE TABLE admin_notes (id int); ALTER TABLE admin_notes OWNER TO game_admin;',
    );
    const liveBefore = containersOf(n.project);
    const refused = await deploy(n, ['--offline']);
    assert.is(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /the fresh backup could not be restored/);
    assert.match(refused.stderr, /--accept-older-backup/);
    assert.match(refused.stderr, /role "game_admin" does not exist/);
    assert.equal(containersOf(n.project), liveBefore);
    await sleep(3000);
    assert.is(appHealthy(n), 'healthy');
    const before = liveWrites(n);
    await sleep(1000);
    assert.ok(liveWrites(n) > before, 'the live writers serve again');

    const accepted = await deploy(n, ['--offline', '--accept-older-backup']);
    assert.is(accepted.code, 0, accepted.stderr);
    const result = JSON.parse(accepted.stdout);
    assert.is(result.backupUsed, older);
    assert.is(result.attempts[0].ok, false);
    assert.match(result.attempts[0].reason, /game_admin/);
    assert.ok(result.backupAgeSeconds >= 1);
    assert.match(accepted.stderr, /Deploying with an older backup/);
    // The streamed attempt's scratch database went with its failure; only the winner is live.
    assert.ok(existsSync(result.attempts[0].diagnostics));
    assert.is(sqlIn(n.container, "SELECT count(*) FROM pg_database WHERE datname LIKE 'planetarion\\_%'"), '0');
  },
);

faults(
  'every candidate failing: exit 1, the new slot removed, the old slot serving as before, diagnostics files present',
  async () => {
    const n = nas();
    assert.is((await deploy(n)).code, 0);
    for (let i = 0; i < 2; i++) {
      corrupt(join(n.dir, 'backups', JSON.parse((await runTool('backup-database', ['--json'], n.env)).stdout).file));
      await sleep(1100);
    }
    sqlIn(
      n.container,
      'CREATE ROLE game_admin; CREATE TABLE admin_notes (id int); ALTER TABLE admin_notes OWNER TO game_admin;',
    );
    const liveBefore = containersOf(n.project);
    const r = await deploy(n, ['--offline', '--accept-older-backup']);
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /every restore into the new slot failed \(3 attempt\(s\)\)/);
    assert.equal(containersOf(n.project), liveBefore);
    assert.is(readdirSync(join(n.dir, 'logs')).filter((f) => f.startsWith('restore_debug_')).length, 3);
    await sleep(3000);
    const before = liveWrites(n);
    await sleep(1000);
    assert.ok(liveWrites(n) > before);
  },
);

faults('the new app never becomes healthy: automatic rollback, the old slot live again, exit 1', async () => {
  const n = nas();
  assert.is((await deploy(n)).code, 0);
  // The app's checks count from 2 s, so it turns 'unhealthy' quickly; the timeout stays long
  // enough for the new database's first start (initdb), which the same timeout bounds.
  n.setCompose((yaml) =>
    yaml
      .replace('APP_HEALTHY: "${APP_HEALTHY:-1}"', 'APP_HEALTHY: "0"')
      .replace('start_period: 300s', 'start_period: 2s'),
  );
  const liveBefore = containersOf(n.project);
  const r = await runTool('deploy-to-qnap', ['--local', '--health-timeout', '180', ...n.deployArgs], n.env);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /did not become healthy.*rolled back/, r.stderr);
  assert.equal(containersOf(n.project), liveBefore);
  await sleep(3000);
  assert.is(appHealthy(n), 'healthy');
});
faults.after(cleanAll);
faults.run();
