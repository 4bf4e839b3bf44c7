// deploy-to-qnap from a workstation over real sshd on 127.0.0.1 when the connection dies: the
// workstation's ssh killed during the online copy and during the freeze (it reconnects), the
// workstation itself killed during the switch (the NAS side finishes it alone). Also: uploaded
// files are 0600, and an unreadable .qnap-deploy.env is one line. Real Docker and PostgreSQL behind the "NAS" dir.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, waitFor } from './helpers/cli.ts';
import {
  childWith,
  installDockerHook,
  logSince,
  logSize,
  nothingLost,
  patient,
  sleep,
  slowMachine,
  startGroup,
  stateOf,
  writersRun,
} from './helpers/deploy-faults.ts';
import { startSshd, type TestSshd } from './helpers/sshd.ts';
import { makeTestNas, sqlIn, type TestNas } from './helpers/stack.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

let sshd: TestSshd | undefined;
let nas: TestNas | undefined;
let workstation = '';
let hook = { path: '', hook: '' };

function deployEnv(): Record<string, string> {
  return {
    QNAP_SSH_KEY: sshd!.keyFile,
    QNAP_SSH_PORT: String(sshd!.port),
    QNAP_SSH_KNOWN_HOSTS: sshd!.knownHosts,
    QNAP_SSH_TIMEOUT: '20',
  };
}

const remote = suite('deploy-to-qnap: the NAS side outlives the SSH session');

remote('an unreadable .qnap-deploy.env: exit 2, one error line naming it, no stack trace', async () => {
  const dir = makeTempDir('planetarion-ws-');
  try {
    mkdirSync(join(dir, '.qnap-deploy.env'));
    const r = await runTool('deploy-to-qnap', [], {}, { cwd: dir });
    assert.is(r.code, 2, r.stderr);
    assert.is(r.stderr.split('\n')[0], `Error: cannot read ${join(dir, '.qnap-deploy.env')}: it is a directory`);
    assert.not.match(r.stderr, /\n\s+at /);
  } finally {
    removeTempDir(dir);
  }
});

remote('setup and first deployment: the compose file and planetarion.env are written 0600 on the NAS', async () => {
  nas = makeTestNas();
  hook = installDockerHook(nas);
  sshd = await startSshd({
    env: { PATH: `${nas.qnap.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
  });
  workstation = makeTempDir('planetarion-ws-');
  writeFileSync(
    join(workstation, 'docker-compose.qnap.yml'),
    patient(readFileSync(join(nas.dir, 'docker-compose.qnap.yml'), 'utf8')),
    { mode: 0o644 },
  );
  writeFileSync(
    join(workstation, 'planetarion.env'),
    `PLANETARION_DB_CONTAINER=${nas.container}\nDOCKER=${hook.path}\n`,
    { mode: 0o644 },
  );
  writeFileSync(
    join(workstation, '.qnap-deploy.env'),
    `QNAP_IP=127.0.0.1\nQNAP_USER=root\nQNAP_PROJECT_DIR=${nas.dir}\n`,
  );
  const r = await runTool('deploy-to-qnap', [...nas.deployArgs, ...slowMachine], deployEnv(), { cwd: workstation });
  assert.is(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    /Running on the NAS as run \d{8}_\d{6}-[0-9a-f]{6} \(pid \d+\), detached from this SSH session/,
  );
  assert.match(r.stderr, /First deployment is live/);
  for (const file of ['docker-compose.qnap.yml', 'planetarion.env'])
    assert.is(statSync(join(nas.dir, file)).mode & 0o777, 0o600, file);
});

remote(
  'the ssh client killed during the freeze: the workstation reconnects and reports the outcome; nothing lost; a cron failure after the switch only warns',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const from = logSize(nas);
    // QNAP's crontab unreadable (a folder in its place): the cron step after the switch fails.
    renameSync(nas.qnap.crontab, `${nas.qnap.crontab}.real`);
    mkdirSync(nas.qnap.crontab);
    const ws = startGroup('deploy-to-qnap', [...nas.deployArgs, ...slowMachine, '--json'], deployEnv(), workstation);
    try {
      await waitFor('the freeze', () => /Stopping the live writers/.test(logSince(nas!, from)), 900_000, 50);
      const ssh = childWith(ws.pid, '--follow');
      assert.ok(ssh, 'the workstation follows the log over ssh');
      process.kill(ssh, 'SIGKILL');
    } catch (error) {
      process.kill(-ws.pid, 'SIGKILL');
      throw error;
    }
    const r = await ws.done;
    rmSync(nas.qnap.crontab, { recursive: true });
    renameSync(`${nas.qnap.crontab}.real`, nas.qnap.crontab);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Lost the connection to the NAS \(.*\); the run goes on there\. Reconnecting/);
    assert.match(
      r.stderr,
      /Deployment A-B switched, with warnings,.*warning: installing the backup cron job failed after the switch/,
    );
    assert.is(stateOf(nas).lastDeploy.outcome, 'switched');
    assert.match(String(stateOf(nas).lastDeploy.warnings), /installing the backup cron job failed/);
    // Each log line reached the workstation once, across the reconnection.
    assert.is(r.stderr.match(/Stopping the live writers/g)?.length, 1);
    const result = JSON.parse(r.stdout);
    assert.is(result.mode, 'ab');
    await writersRun(nas);
    await nothingLost(nas, result.previous);
  },
);

/** SQL that holds the new slot's copy of app_writes for a while (a trigger that fires in the subscription's workers only, on its first row). */
const slowCopy = (firstId: string) => `
  CREATE FUNCTION slow_copy() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN IF current_setting('session_replication_role') = 'replica' AND NEW.id = ${Number(firstId)} THEN PERFORM pg_sleep(15); END IF; RETURN NEW; END $$;
  CREATE TRIGGER slow_copy BEFORE INSERT ON app_writes FOR EACH ROW EXECUTE FUNCTION slow_copy();
  ALTER TABLE app_writes ENABLE ALWAYS TRIGGER slow_copy;`;

remote(
  'the ssh client killed during the online copy: the NAS side goes on, the workstation reconnects and reports the switch; no replication object left, nothing lost',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const from = logSize(nas);
    sqlIn(nas.container, slowCopy(sqlIn(nas.container, 'SELECT min(id) FROM app_writes')));
    const ws = startGroup('deploy-to-qnap', [...nas.deployArgs, ...slowMachine, '--json'], deployEnv(), workstation);
    try {
      await waitFor('the online copy', () => /Subscription \S+: .* copies/.test(logSince(nas!, from)), 900_000, 50);
      const ssh = childWith(ws.pid, '--follow');
      assert.ok(ssh, 'the workstation follows the log over ssh');
      process.kill(ssh, 'SIGKILL');
    } catch (error) {
      process.kill(-ws.pid, 'SIGKILL');
      throw error;
    }
    const r = await ws.done;
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Lost the connection to the NAS \(.*\); the run goes on there\. Reconnecting/);
    assert.match(r.stderr, /every table copied, the new database follows the live one/);
    assert.is(r.stderr.match(/Stopping the live writers/g)?.length, 1);
    const result = JSON.parse(r.stdout);
    assert.is(result.mode, 'ab');
    assert.is(stateOf(nas).lastDeploy.outcome, 'switched');
    for (const catalog of ['pg_replication_slots', 'pg_publication', 'pg_subscription'])
      assert.is(sqlIn(nas.container, `SELECT count(*) FROM ${catalog}`), '0', catalog);
    sqlIn(nas.container, 'DROP TRIGGER slow_copy ON app_writes');
    await writersRun(nas);
    await nothingLost(nas, result.previous);
  },
);

/** The pid of the newest NAS-side run (its run record). */
function newestRunPid(n: TestNas): number {
  const runs = join(n.dir, 'deploy/runs');
  const record = readdirSync(runs)
    .filter((f) => f.endsWith('.run.json'))
    .sort()
    .pop()!;
  return JSON.parse(readFileSync(join(runs, record), 'utf8')).pid;
}

remote(
  'the ssh client killed during the proof, the new services starting beside the detach, and the release: each time the NAS side goes on, the workstation reconnects and reports the switch; no replication object left, nothing lost',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    for (const phase of ['prove', 'start + detach', 'release']) {
      const from = logSize(nas);
      const ws = startGroup('deploy-to-qnap', [...nas.deployArgs, ...slowMachine, '--json'], deployEnv(), workstation);
      const inPhase = new RegExp(`Phase \\d+/\\d+ ${phase.replace('+', '\\+')}: `);
      let held = 0;
      try {
        await waitFor(`the ${phase} phase`, () => inPhase.test(logSince(nas!, from)), 900_000, 10);
        // The NAS side held in the phase while its connection dies, so the loss lands there.
        held = newestRunPid(nas);
        process.kill(held, 'SIGSTOP');
        const phases = [...logSince(nas, from).matchAll(/Phase \d+\/\d+ (\w+(?: \+ \w+)*): /g)].map((m) => m[1]);
        assert.is(phases.at(-1), phase, `the NAS side had gone past ${phase}: ${phases.join(', ')}`);
        const ssh = childWith(ws.pid, '--follow');
        assert.ok(ssh, 'the workstation follows the log over ssh');
        process.kill(ssh, 'SIGKILL');
        await sleep(1000);
      } catch (error) {
        process.kill(-ws.pid, 'SIGKILL');
        throw error;
      } finally {
        if (held) process.kill(held, 'SIGCONT');
      }
      const r = await ws.done;
      assert.is(r.code, 0, `${phase}: ${r.stderr}`);
      assert.match(r.stderr, /Lost the connection to the NAS \(.*\); the run goes on there\. Reconnecting/);
      assert.is(r.stderr.match(inPhase)?.length, 1, `${phase}: each log line once`);
      const result = JSON.parse(r.stdout);
      assert.is(result.mode, 'ab');
      assert.match(r.stderr, /Fingerprint proven/);
      assert.is(stateOf(nas).lastDeploy.outcome, 'switched');
      for (const catalog of ['pg_replication_slots', 'pg_publication', 'pg_subscription'])
        assert.is(sqlIn(nas.container, `SELECT count(*) FROM ${catalog}`), '0', `${phase}: ${catalog}`);
      await writersRun(nas);
      await nothingLost(nas, result.previous);
    }
  },
);

remote(
  'the workstation killed (with its ssh) during the switch: the NAS side finishes it; a later --status reports the outcome',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const before = stateOf(nas);
    writeFileSync(hook.hook, 'slow * 2\n');
    const ws = startGroup('deploy-to-qnap', [...nas.deployArgs, ...slowMachine], deployEnv(), workstation);
    try {
      await waitFor('the first rename of the switch', () => existsSync(`${hook.hook}.slowed`), 900_000, 50);
    } finally {
      try {
        process.kill(-ws.pid, 'SIGKILL');
      } catch {
        // It gave up following already (a loaded machine's sshd can be slower than its retries): the NAS side goes on all the same.
      }
    }
    await ws.done;
    const runs = join(nas.dir, 'deploy/runs');
    const run = readdirSync(runs)
      .filter((f) => f.endsWith('.run.json'))
      .sort()
      .pop()!
      .replace('.run.json', '');
    await waitFor('the NAS-side run to end', () => existsSync(join(runs, `${run}.result.json`)), 900_000, 200);
    rmSync(hook.hook, { force: true });
    assert.is(JSON.parse(readFileSync(join(runs, `${run}.result.json`), 'utf8')).exitCode, 0);
    const status = await runTool('deploy-to-qnap', ['--status'], deployEnv(), { cwd: workstation });
    assert.is(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`^Last run: ${run} \\(.*\\) started .*: ended with exit 0`, 'm'));
    assert.match(status.stdout, /^Last deployment: .* ab switched succeeded/m);
    const after = stateOf(nas);
    assert.is.not(after.live.project, before.live.project);
    assert.is(after.previous!.project, before.live.project);
    await writersRun(nas);
    await nothingLost(nas, after.previous!);
  },
);

remote.after(async () => {
  await sshd?.stop();
  nas?.cleanup();
  if (workstation) removeTempDir(workstation);
});
remote.run();
