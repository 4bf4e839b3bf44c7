// deploy-to-qnap --local when the NAS-side run is killed between two container renames of the
// switch (held there by a `docker` wrapper that pauses a rename, the way a slow Docker would): the
// next run finishes or undoes the switch, a first deployment's too. And a rollback whose previous
// slot cannot start.
// Real Docker and PostgreSQL.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, waitFor } from './helpers/cli.ts';
import {
  ageKilledRunLock,
  dbOf,
  installDockerHook,
  nothingLost,
  patient,
  slowMachine,
  startGroup,
  stateOf,
  writersRun,
} from './helpers/deploy-faults.ts';
import { containersOf, makeTestNas, type TestNas } from './helpers/stack.ts';

let hook = { path: '', hook: '' };

const crash = suite('deploy-to-qnap: a run killed between the renames is reconciled by the next run');
let n: TestNas | undefined;

/**
 * Runs an A-B deployment on the NAS until the rename to `target` pauses, then kills it (kill -9)
 * with its children; its lock is then made old, as by the time of the next run, unless `freshLock`.
 */
async function deployKilledAtRename(target: string, options: { freshLock?: boolean } = {}): Promise<void> {
  writeFileSync(hook.hook, `pause ${target} 0\n`);
  const run = startGroup('deploy-to-qnap', ['--local', ...n!.deployArgs, ...slowMachine], n!.env);
  let ended: string | undefined;
  void run.done.then((r) => (ended = `the run ended (exit ${r.code}) before that rename:\n${r.stderr}`));
  try {
    await waitFor(
      `the rename to ${target}`,
      () => {
        if (ended) throw new Error(ended);
        return existsSync(`${hook.hook}.paused`);
      },
      900_000,
      50,
    );
  } finally {
    if (!ended) process.kill(-run.pid, 'SIGKILL');
  }
  await run.done;
  rmSync(`${hook.hook}.paused`);
  assert.ok(existsSync(join(n!.dir, 'deploy/switch.json')), 'the switch journal is left behind');
  if (!options.freshLock) ageKilledRunLock(n!);
}

crash('a first deployment killed between its two renames: the next run (--status) finishes it', async () => {
  n = makeTestNas();
  const nas = n;
  nas.setCompose(patient);
  hook = installDockerHook(nas);
  nas.env.DOCKER = hook.path;
  // The database has taken its live name; the app's rename pauses and the run is killed there.
  await deployKilledAtRename(`${n.project}-app`, { freshLock: true });
  assert.is(containersOf(n.project)[n.container], 'running');
  // The killed run's lock is a few seconds old at first (counted as held): --status waits its turn.
  let status = await runTool('deploy-to-qnap', ['--local', '--status'], n.env);
  await waitFor(
    '--status to reconcile',
    async () => {
      if (!/another run holds the lock/.test(status.stdout)) return true;
      status = await runTool('deploy-to-qnap', ['--local', '--status'], nas.env);
      return false;
    },
    120_000,
    1000,
  );
  assert.is(status.code, 0, status.stderr);
  assert.match(status.stderr, /Reconciled: an interrupted deploy switch to \S+ was finished: \S+ serves/);
  assert.not.ok(existsSync(join(n.dir, 'deploy/switch.json')));
  const state = stateOf(n);
  assert.is(state.lastDeploy.mode, 'first');
  assert.is(state.lastDeploy.outcome, 'switched');
  assert.is(state.previous, undefined);
  const names = containersOf(n.project);
  assert.is(names[n.container], 'running');
  assert.is(names[`${n.project}-app`], 'running');
  await writersRun(n);
});

crash('killed after the live slot gave up its names: the next run (--status) finishes the switch', async () => {
  assert.ok(n, 'setup failed');
  const before = stateOf(n);
  // The new database taking the live name: the old slot has given up both names and stopped.
  await deployKilledAtRename(n.container);
  const status = await runTool('deploy-to-qnap', ['--local', '--status'], n.env);
  assert.is(status.code, 0, status.stderr);
  assert.match(status.stderr, /Reconciled: an interrupted deploy switch to .* was finished/);
  assert.not.ok(existsSync(join(n.dir, 'deploy/switch.json')));
  const after = stateOf(n);
  assert.is.not(after.live.project, before.live.project);
  assert.is(after.previous!.project, before.live.project);
  assert.is(after.lastDeploy.outcome, 'switched');
  assert.match(String(after.lastDeploy.warnings), /reconciled by a later run/);
  const names = containersOf(n.project);
  assert.is(names[n.container], 'running');
  assert.is(names[`${n.project}-app`], 'running');
  assert.is(names[`${n.container}-${before.live.slotId}`], 'exited');
  assert.match(
    execFileSync('docker', [
      'inspect',
      '-f',
      '{{index .Config.Labels "com.docker.compose.project"}}',
      n.container,
    ]).toString(),
    new RegExp(after.live.project),
  );
  await writersRun(n);
  await nothingLost(n, after.previous!);
});

crash(
  'killed while the live slot gave up its names: the next backup-database undoes the switch and backs up the live slot',
  async () => {
    assert.ok(n, 'setup failed');
    const before = stateOf(n);
    // The old app's rename, after the old database's: the old slot has given up one name of two.
    await deployKilledAtRename(`${n.project}-app-${before.live.slotId}`);
    const backup = await runTool('backup-database', ['--json'], n.env);
    assert.is(backup.code, 0, backup.stderr);
    assert.match(backup.stderr, /Reconciled: an interrupted deploy switch to (\S+) was undone: .* is live again/);
    const after = stateOf(n);
    assert.is(after.live.project, before.live.project);
    assert.is(after.previous!.project, before.previous!.project);
    assert.is(after.lastDeploy.outcome, 'undone');
    const names = containersOf(n.project);
    assert.is(names[n.container], 'running');
    assert.is(names[`${n.project}-app`], 'running');
    assert.match(
      execFileSync('docker', [
        'inspect',
        '-f',
        '{{index .Config.Labels "com.docker.compose.project"}}',
        n.container,
      ]).toString(),
      new RegExp(before.live.project),
    );
    await writersRun(n);
    const manifest = JSON.parse(readFileSync(join(n.dir, 'backups', `${JSON.parse(backup.stdout).file}.json`), 'utf8'));
    assert.is(manifest.container, n.container);
  },
);

crash(
  '--rollback whose previous slot cannot start: the current slot serves again, the state says so, the writes since the switch are pinned',
  async () => {
    assert.ok(n, 'setup failed');
    const before = stateOf(n);
    // The previous slot's database loses its data directory's version file: PostgreSQL refuses to start.
    const volume = execFileSync('docker', [
      'inspect',
      '-f',
      '{{range .Mounts}}{{if eq .Destination "/var/lib/postgresql/data"}}{{.Name}}{{end}}{{end}}',
      dbOf(before.previous!),
    ])
      .toString()
      .trim();
    assert.ok(volume, 'the previous database has a data volume');
    execFileSync('docker', [
      'run',
      '--rm',
      '--network',
      'none',
      '--entrypoint',
      'rm',
      '-v',
      `${volume}:/d`,
      'planetarion-test-pg:latest',
      '/d/PG_VERSION',
    ]);
    const r = await runTool('deploy-to-qnap', ['--local', '--rollback', ...n.deployArgs, ...slowMachine], n.env);
    assert.is(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `the previous slot ${before.previous!.project} did not become healthy .*; the rollback was not done and ${before.live.project} serves again`,
      ),
    );
    const after = stateOf(n);
    assert.is(after.live.project, before.live.project);
    assert.is(after.lastDeploy.outcome, 'rollback failed');
    const pinned = String(after.lastDeploy.pinnedBackup);
    assert.match(pinned, /\/backups\/pinned\/planetarion_backup_\d{8}_\d{6}\.sql\.gz$/);
    assert.ok(existsSync(pinned) && existsSync(`${pinned}.json`) && existsSync(`${pinned}.sha256`));
    assert.match(r.stderr, /pinned as .* \(rotation keeps it/);
    assert.is(containersOf(n.project)[n.container], 'running');
    await writersRun(n);
  },
);

crash.after(() => n?.cleanup());
crash.run();
