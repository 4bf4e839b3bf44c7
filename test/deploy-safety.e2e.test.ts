// deploy-to-qnap --local must never hurt the live game, end to end on real Docker Compose stacks
// shaped like the real one (no container_name, data on a driver_opts bind folder, a one-shot
// migration): the new slot gets storage of its own, a stopped live deployment is refused, an
// old-script stack is recognised, a host-side writer loses no committed row, and SIGTERM at
// any phase before the switch leaves the live slot as it was.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { verifyOwnCluster } from '../lib/deploy/fence.ts';
import { Docker } from '../lib/host/docker.ts';
import { CliError } from '../lib/errors.ts';
import { createShell } from '../lib/host/shell.ts';
import { distBin, runTool, startTool, waitFor } from './helpers/cli.ts';
import { runInTerminal, startSshd } from './helpers/sshd.ts';
import { lockFileName, ownerIsAlive, type LockOwner } from '../lib/host/lock.ts';
import { deployLogName } from '../lib/paths.ts';
import { startHostWriter, whileWriting } from './helpers/deploy-faults.ts';
import {
  containersOf,
  health,
  makeTestNas,
  sqlIn,
  startOldScriptStack,
  type TestNas,
  volumesOf,
} from './helpers/stack.ts';

const nases: TestNas[] = [];
function nas(): TestNas {
  const n = makeTestNas('real');
  nases.push(n);
  return n;
}
const cleanAll = () => {
  while (nases.length) nases.pop()!.cleanup();
};

const deploy = (n: TestNas, args: string[] = []) =>
  runTool('deploy-to-qnap', ['--local', '--json', '--health-timeout', '180', ...n.deployArgs, ...args], n.env);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sql = sqlIn;
const systemId = (container: string) => sql(container, 'SELECT system_identifier FROM pg_control_system()');
const appName = (n: TestNas) => `${n.project}-app`;

const safety = suite('deploy-to-qnap: the new slot is isolated, the live deployment found by what runs');

safety(
  'an old-script stack without container_name, data on a driver_opts bind folder, a host writer inserting all along: recognised, deployed A-B onto a folder of its own, no committed row lost',
  async () => {
    const n = nas();
    const legacyDb = startOldScriptStack(n);
    sql(legacyDb, 'CREATE TABLE host_ticks (n int PRIMARY KEY)');
    const liveId = systemId(legacyDb);
    const writer = startHostWriter(legacyDb, 'INSERT INTO host_ticks (n) VALUES ($i)');
    await waitFor('the host writer to commit', () => writer.committed().length > 3, 180_000, 100);
    const r = await whileWriting(writer, () => deploy(n));
    assert.is(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.is(result.mode, 'ab');
    assert.is(result.previous.managed, false);
    assert.is(result.previous.project, n.project);
    assert.match(r.stderr, /Fence: .* takes no writes/);
    // The new slot runs on a sibling folder of its own, made 0700; the live folder is not its.
    const folder = `${n.share}/pgdata-${result.live.slotId}`;
    assert.equal(result.live.folders, [folder]);
    assert.ok(existsSync(join(folder, 'PG_VERSION')));
    assert.is(statSync(folder).mode & 0o777, 0o700);
    assert.is.not(systemId(n.container), liveId);
    // Every tick the host writer committed is in the new live database.
    const live = new Set(sql(n.container, 'SELECT n FROM host_ticks').split('\n').map(Number));
    const missing = writer.committed().filter((i) => !live.has(i));
    assert.equal(missing, [], `committed ticks missing from the new live database: ${missing.join(', ')}`);
    // The one-shot migration of the new slot ran and exited 0: done, not a failure.
    assert.is(containersOf(n.project)[`${n.project}-migrate`], 'exited');
    // The old slot's server, started again on its own folder, is the old cluster with its data.
    const oldDb = `${legacyDb}-${result.previous.slotId}`;
    assert.is(containersOf(n.project)[oldDb], 'exited');
    execFileSync('docker', ['start', oldDb]);
    await waitFor('the old database', () => health(oldDb) === 'healthy', 60_000, 200);
    assert.is(systemId(oldDb), liveId);
    assert.ok(Number(sql(oldDb, 'SELECT count(*) FROM host_ticks')) > 0);
    execFileSync('docker', ['stop', oldDb]);
  },
);

safety(
  'a stopped live DB container is refused (exit 2, nothing started); a removed one with volumes and backups too; --fresh-from-backup restores the newest backup into a fresh deployment',
  async () => {
    const n = nas();
    assert.is((await deploy(n)).code, 0);
    await waitFor('the app', () => health(appName(n)) === 'healthy', 60_000, 200);
    // Counted before the backup: the app keeps writing until the container stops.
    const rows = Number(sql(n.container, 'SELECT count(*) FROM app_writes'));
    const backedUp = await runTool('backup-database', ['--json'], n.env);
    assert.is(backedUp.code, 0, backedUp.stderr);
    const backup = JSON.parse(backedUp.stdout).file as string;
    execFileSync('docker', ['stop', n.container]);
    const before = containersOf(n.project);
    const slotFiles = readdirSync(join(n.dir, 'deploy')).sort();
    const refused = await deploy(n);
    assert.is(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, new RegExp(`the database container '${n.container}' exists but is stopped`));
    assert.match(refused.stderr, new RegExp(`docker start ${n.container}`));
    assert.match(refused.stderr, /--fresh-from-backup/);
    assert.equal(containersOf(n.project), before);
    assert.equal(readdirSync(join(n.dir, 'deploy')).sort(), slotFiles);
    // --dry-run says the same.
    assert.is((await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env)).code, 2);

    const fresh = await deploy(n, ['--fresh-from-backup']);
    assert.is(fresh.code, 0, fresh.stderr);
    const result = JSON.parse(fresh.stdout);
    assert.is(result.mode, 'fresh');
    assert.is(result.backupUsed, backup);
    assert.ok(result.attempts[0].ok);
    assert.ok(Number(sql(n.container, 'SELECT count(*) FROM app_writes')) >= rows);
    assert.is(containersOf(n.project)[`${n.container}-${result.previous.slotId}`], 'exited');

    // Removed, with its volumes and backups left: still not a first deployment.
    execFileSync('sh', ['-c', 'docker rm -f "$@" >/dev/null', 'sh', ...Object.keys(containersOf(n.project))]);
    const gone = await deploy(n);
    assert.is(gone.code, 2, gone.stderr);
    assert.match(gone.stderr, /no live deployment runs, but one exists: .*volumes .*backup\(s\) in/);
    assert.equal(containersOf(n.project), {});
  },
);

safety(
  'the same cluster on both sides is refused before any statement (system_identifier); a failing docker rename is a one-line error',
  async () => {
    const n = nas();
    assert.is((await deploy(n)).code, 0);
    const target = { docker: 'docker', container: n.container, user: 'planetarion_user', database: 'planetarion' };
    const $ = createShell();
    await verifyOwnCluster($, target, target).then(
      () => assert.unreachable('equal clusters passed'),
      (error: Error) => assert.match(error.message, /is the live cluster \(both have system_identifier \d+\)/),
    );
    // A failing `docker rename` (here: the name is taken) is a CliError naming both names, not a stack.
    await new Docker('docker', $).rename(`${n.project}-app`, n.container).then(
      () => assert.unreachable('rename onto a taken name passed'),
      (error: Error) => {
        assert.instance(error, CliError);
        assert.match(
          error.message,
          new RegExp(`^docker rename ${n.project}-app ${n.container} failed: .*already in use`),
        );
      },
    );
  },
);
safety.after.each(cleanAll);
safety.run();

const signals = suite(
  'deploy-to-qnap: SIGINT, SIGTERM or SIGHUP at each phase before the switch, or a lost SSH session, rolls back',
);

/** What an interrupted deployment left to check: its exit code and what it said (the log, for a lost session). */
interface Interrupted {
  code: number | null;
  said: string;
}

/**
 * Starts a deployment and interrupts it once its log announces `phase` (after `delayMs`): sends
 * `how`, or loses the SSH session it was started in by hand (sshd hangs up its terminal: SIGHUP,
 * and every later write to the terminal fails).
 */
async function deployInterruptedAt(
  n: TestNas,
  phase: string,
  delayMs: number,
  how: NodeJS.Signals | 'lost session',
): Promise<Interrupted> {
  const args = ['--local', '--health-timeout', '180', ...n.deployArgs];
  const inPhase = new RegExp(`Phase \\d+/\\d+ ${phase.replaceAll('+', '\\+')}:`);
  if (how === 'lost session') {
    const sshd = await startSshd();
    try {
      const session = runInTerminal(sshd, n.env, [join(distBin, 'deploy-to-qnap'), ...args]);
      await waitFor(`phase ${phase}`, () => inPhase.test(session.output()), 600_000, 20).catch((error: Error) => {
        throw new Error(`${error.message}; the terminal showed:\n${session.output()}`);
      });
      await sleep(delayMs);
      const owner = JSON.parse(readFileSync(join(n.dir, lockFileName), 'utf8')) as LockOwner;
      session.lose();
      await waitFor(`the deployment (pid ${owner.pid}) to end`, () => !ownerIsAlive(owner), 600_000, 100);
      return { code: null, said: readFileSync(join(n.dir, 'logs', deployLogName), 'utf8') };
    } finally {
      await sshd.stop();
    }
  }
  const started = startTool('deploy-to-qnap', args, n.env);
  let stderr = '';
  started.child.stderr!.on('data', (d: string) => (stderr += d));
  // A deployment that never reaches the phase is rolled back, so it cannot finish and move the live slot under the next test.
  await waitFor(`phase ${phase}`, () => inPhase.test(stderr), 600_000, 20).catch(async (error: Error) => {
    started.child.kill('SIGTERM');
    await started.done;
    throw new Error(`${error.message}; the log:\n${stderr}`);
  });
  await sleep(delayMs);
  started.child.kill(how);
  const r = await started.done;
  return { code: r.code, said: r.stderr };
}

// One NAS for every phase: each interrupted deployment must leave it exactly as it was.
let signalNas: TestNas | undefined;
let liveSlot: { project: string; slotId: string } | undefined;
signals('setup: a first deployment of the real-shaped stack', async () => {
  signalNas = nas();
  const first = await deploy(signalNas);
  assert.is(first.code, 0, first.stderr);
  liveSlot = JSON.parse(first.stdout).live;
});

for (const [phase, delayMs, signal] of [
  ['stage', 500, 'SIGTERM'],
  ['freeze', 300, 'SIGINT'],
  ['prove', 100, 'SIGHUP'],
  ['start + detach', 300, 'SIGTERM'],
  ['release', 0, 'SIGTERM'],
  // Run by hand over SSH, the connection drops while the writers are stopped and the fence is up.
  ['freeze', 300, 'lost session'],
] as const) {
  signals(
    `${signal} during ${phase}: ${signal === 'lost session' ? 'the rollback runs' : 'exit 1'}, the writers run again, the fence is gone, no slot is left, the live data is intact`,
    async () => {
      const n = signalNas!;
      assert.ok(liveSlot, 'setup failed');
      await waitFor('the app', () => health(appName(n)) === 'healthy', 120_000, 200);
      const liveBefore = containersOf(n.project);
      const rowsBefore = Number(sql(n.container, 'SELECT count(*) FROM app_writes'));
      const r = await deployInterruptedAt(n, phase, delayMs, signal);
      // Killed by a failed write to the lost terminal, it would stop at the SIGHUP's own log line.
      if (signal === 'lost session')
        assert.match(
          r.said,
          /The deployment stopped before the switch: interrupted by SIGHUP; rolling back[\s\S]*Removed slot/,
        );
      else {
        assert.is(r.code, 1, r.said);
        assert.match(r.said, new RegExp(`Error: interrupted by ${signal}`));
      }
      assert.not.match(r.said, / {4}at /);
      // Only the live slot's containers, in the states they had.
      await waitFor('the writers to run', () => containersOf(n.project)[appName(n)] === 'running', 60_000, 200);
      assert.equal(containersOf(n.project), liveBefore);
      assert.equal(
        volumesOf(`${n.project}-s`).filter((v) => !v.startsWith(liveSlot!.project)),
        [],
      );
      assert.equal(readdirSync(n.share).sort(), ['pgdata', `pgdata-${liveSlot.slotId}`]);
      // Not fenced: connections allowed, and a write from outside commits at once.
      assert.is(sql(n.container, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'"), 't');
      sql(n.container, "INSERT INTO app_writes (origin) VALUES ('after-sigterm')");
      assert.ok(Number(sql(n.container, 'SELECT count(*) FROM app_writes')) > rowsBefore);
      await waitFor(
        'the live app to write again',
        () =>
          Number(
            sql(
              n.container,
              "SELECT count(*) FROM app_writes WHERE at > now() - interval '2 seconds' AND origin <> 'after-sigterm'",
            ),
          ) > 0,
        60_000,
        300,
      );
    },
  );
}
/** The containers of the NAS's project (every slot) that run. */
const runningOf = (n: TestNas) =>
  Object.entries(containersOf(n.project))
    .filter(([, state]) => state === 'running')
    .map(([name]) => name)
    .sort();

/**
 * Starts a deployment and SIGKILLs it (no handler, no rollback runs: a power cut) the moment
 * `container` stops once its log has announced `phase`.
 */
async function killedWhenStopped(n: TestNas, phase: string, container: string): Promise<string> {
  // `docker wait` names the container exactly (an events filter matches names by prefix).
  const wait = spawn('docker', ['wait', container], { stdio: 'ignore' });
  let died = false;
  wait.once('exit', () => (died = true));
  try {
    const started = startTool('deploy-to-qnap', ['--local', '--health-timeout', '180', ...n.deployArgs], n.env);
    let stderr = '';
    started.child.stderr!.on('data', (d: string) => (stderr += d));
    const inPhase = new RegExp(`Phase \\d+/\\d+ ${phase}:`);
    await waitFor(
      `${container} to stop in phase ${phase}`,
      async () => {
        if (started.child.exitCode !== null) throw new Error(`the deployment ended first:\n${stderr}`);
        return inPhase.test(stderr) && died;
      },
      600_000,
      5,
    );
    started.child.kill('SIGKILL');
    await started.done;
    return stderr;
  } finally {
    wait.kill();
  }
}

signals(
  'SIGKILL once the writers stopped (freeze), then once the live database stopped (release): the next backup, then --status, start them again; the next deployment removes the slot left',
  async () => {
    const n = signalNas!;
    assert.ok(liveSlot, 'setup failed');
    await waitFor('the app', () => health(appName(n)) === 'healthy', 120_000, 200);
    const running = () => runningOf(n);
    const runningBefore = running();
    await killedWhenStopped(n, 'freeze', appName(n));
    assert.is(containersOf(n.project)[appName(n)], 'exited');
    // The scheduled backup is what runs next on its own.
    const backup = await runTool('backup-database', [], n.env);
    assert.is(backup.code, 0, backup.stderr);
    assert.match(
      backup.stderr,
      new RegExp(`An interrupted deployment had stopped ${appName(n)} of the live slot: starting ${appName(n)}`),
    );
    assert.equal(running(), runningBefore);

    const said = await killedWhenStopped(n, 'release', n.container);
    assert.match(said, /Removing slot \S+, which an interrupted deployment was building/);
    assert.is(containersOf(n.project)[n.container], 'exited');
    const status = await runTool('deploy-to-qnap', ['--local', '--status', ...n.deployArgs], n.env);
    assert.is(status.code, 0, status.stderr);
    assert.match(
      status.stdout,
      new RegExp(`An interrupted deployment had stopped live containers: started ${n.container}, ${appName(n)} again`),
    );
    // Only the live slot runs (the new one, started before the release, was stopped first).
    assert.equal(running(), runningBefore);
    await waitFor('the app', () => health(appName(n)) === 'healthy', 120_000, 200);
    assert.is(sql(n.container, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'"), 't');
    sql(n.container, "INSERT INTO app_writes (origin) VALUES ('after-sigkill')");

    const next = await deploy(n);
    assert.is(next.code, 0, next.stderr);
    assert.match(next.stderr, /Removing slot \S+, which an interrupted deployment was building/);
    assert.is(sql(n.container, "SELECT count(*) FROM app_writes WHERE origin = 'after-sigkill'"), '1');
  },
);
signals(
  'the SSH session of --rollback is lost during its backup: it stops at that safe point, nothing is switched, the current slot serves (writers running, no fence)',
  async () => {
    const n = signalNas!;
    await waitFor('the app', () => health(appName(n)) === 'healthy', 120_000, 200);
    const status = async () =>
      JSON.parse((await runTool('deploy-to-qnap', ['--local', '--status', '--json', ...n.deployArgs], n.env)).stdout);
    const before = await status();
    assert.ok(before.previous, 'no previous slot to roll back to');
    const runningBefore = runningOf(n);
    const sshd = await startSshd();
    try {
      const session = runInTerminal(sshd, n.env, [
        join(distBin, 'deploy-to-qnap'),
        '--local',
        '--rollback',
        ...n.deployArgs,
      ]);
      await waitFor("the rollback's backup", () => /Starting backup of database/.test(session.output()), 300_000, 5);
      const owner = JSON.parse(readFileSync(join(n.dir, lockFileName), 'utf8')) as LockOwner;
      session.lose();
      await waitFor(`the rollback (pid ${owner.pid}) to end`, () => !ownerIsAlive(owner), 300_000, 100);
    } finally {
      await sshd.stop();
    }
    const log = readFileSync(join(n.dir, 'logs', deployLogName), 'utf8');
    assert.match(log, /Received SIGHUP: stopping at the next safe point/);
    const after = await status();
    assert.is(after.live.project, before.live.project);
    assert.match(after.lastDeploy.error, /interrupted by SIGHUP/);
    assert.equal(runningOf(n), runningBefore);
    assert.is(sql(n.container, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'"), 't');
    sql(n.container, "INSERT INTO app_writes (origin) VALUES ('after-lost-rollback')");

    // The stopped previous slot may not start on its own when the daemon starts (a NAS reboot)
    // beside the live one: its policy is `no` until a rollback gives back the compose file's.
    const policies = (slot: { containers: Array<{ service: string; name: string }> }) =>
      Object.fromEntries(
        slot.containers.map((c) => [
          c.service,
          execFileSync('docker', ['inspect', '-f', '{{.HostConfig.RestartPolicy.Name}}', c.name]).toString().trim(),
        ]),
      );
    const composed = { db: 'unless-stopped', app: 'unless-stopped', migrate: 'no' };
    assert.equal(policies(after.live), composed);
    assert.equal(policies(after.previous), { db: 'no', app: 'no', migrate: 'no' });
    const back = await runTool(
      'deploy-to-qnap',
      ['--local', '--rollback', '--health-timeout', '180', ...n.deployArgs],
      n.env,
    );
    assert.is(back.code, 0, back.stderr);
    const rolled = await status();
    assert.is(rolled.live.project, before.previous.project);
    assert.equal(policies(rolled.live), composed);
    assert.equal(policies(rolled.previous), { db: 'no', app: 'no', migrate: 'no' });
  },
);
signals.after(cleanAll);
signals.run();
