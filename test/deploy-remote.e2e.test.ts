// deploy-to-qnap from a "workstation" over real SSH (sshd on 127.0.0.1) to a "NAS" that is a
// temp dir on this machine, with the real Docker engine behind it.
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool } from './helpers/cli.ts';
import { freePort, startSshd, type TestSshd } from './helpers/sshd.ts';
import { containersOf, makeTestNas, type TestNas } from './helpers/stack.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';
import { launcherNames } from '../lib/paths.ts';

let sshd: TestSshd | undefined;
let nas: TestNas | undefined;
let workstation = '';

function deployEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    QNAP_IP: '127.0.0.1',
    QNAP_USER: 'root',
    QNAP_PROJECT_DIR: nas!.dir,
    QNAP_SSH_KEY: sshd!.keyFile,
    QNAP_SSH_PORT: String(sshd!.port),
    QNAP_SSH_KNOWN_HOSTS: sshd!.knownHosts,
    QNAP_SSH_TIMEOUT: '3',
    ...overrides,
  };
}

const remote = suite('deploy-to-qnap over SSH');

remote(
  'setup: sshd on 127.0.0.1, an empty NAS dir, a workstation folder with .qnap-deploy.env and the compose file',
  async () => {
    nas = makeTestNas();
    // The NAS's cron job goes to a fake QNAP root; its `crontab` command is the recording one.
    sshd = await startSshd({
      env: { PATH: `${nas.qnap.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
    });
    workstation = makeTempDir('planetarion-ws-');
    // The NAS dir starts empty: the compose file and settings come from the workstation.
    writeFileSync(join(workstation, 'docker-compose.qnap.yml'), readFileSync(join(nas.dir, 'docker-compose.qnap.yml')));
    writeFileSync(join(nas.dir, 'docker-compose.qnap.yml'), '');
    writeFileSync(join(workstation, 'planetarion.env'), `PLANETARION_DB_CONTAINER=${nas.container}\n`);
    writeFileSync(
      join(workstation, '.qnap-deploy.env'),
      `# as the old deploy-to-qnap.sh read it\nQNAP_IP=127.0.0.1\nQNAP_USER=root\nQNAP_PROJECT_DIR=${nas.dir}\n`,
    );
    assert.ok(sshd.port > 0);
  },
);

remote(
  'first deployment: uploads the executables, command links, compose file and settings, then runs the A-B flow on the NAS',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const env = deployEnv();
    delete (env as Record<string, string | undefined>).QNAP_IP; // read from .qnap-deploy.env
    const r = await runTool('deploy-to-qnap', nas.deployArgs, env, { cwd: workstation });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /NAS: x86_64, kernel .* -> linux-x64/);
    assert.match(r.stderr, /Uploaded the linux-x64 executables/);
    assert.match(r.stderr, /First deployment is live/);
    for (const name of launcherNames) {
      assert.is(readlinkSync(join(nas.dir, name)), `bin/${name}`, name);
    }
    assert.ok(existsSync(join(nas.dir, 'bin/runtime/planetarion')));
    assert.is(readFileSync(join(nas.dir, 'planetarion.env'), 'utf8'), `PLANETARION_DB_CONTAINER=${nas.container}\n`);
    assert.ok(readFileSync(join(nas.dir, 'docker-compose.qnap.yml'), 'utf8').includes(nas.container));
    assert.is(containersOf(nas.project)[nas.container], 'running');
    assert.is(JSON.parse(readFileSync(join(nas.dir, 'deploy/state.json'), 'utf8')).lastDeploy.mode, 'first');
    assert.match(
      readFileSync(nas.qnap.crontab, 'utf8'),
      new RegExp(`${nas.dir}/backup-database >> .* # planetarion-backup:backup`),
    );
  },
);

remote(
  "second deployment: executables already current are not uploaded again; planetarion.env merged (the NAS's own key kept); A-B over the live slot; --status from the workstation",
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const nasSettings = `${readFileSync(join(nas.dir, 'planetarion.env'), 'utf8')}PLANETARION_KEEP=7\n`;
    writeFileSync(join(nas.dir, 'planetarion.env'), nasSettings, { mode: 0o600 });
    writeFileSync(
      join(workstation, 'planetarion.env'),
      `PLANETARION_DB_CONTAINER=${nas.container}\nPLANETARION_DRILL_SCHEDULE='0 4 * * 0'\n`,
    );
    const r = await runTool('deploy-to-qnap', nas.deployArgs, deployEnv(), { cwd: workstation });
    assert.is(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      `Settings: merged into ${nas.dir}/planetarion.env (nothing on the NAS changes or goes):\n  PLANETARION_KEEP: only on the NAS (kept)\n  PLANETARION_DRILL_SCHEDULE: only here (added)\n`,
    );
    assert.is(
      readFileSync(join(nas.dir, 'planetarion.env'), 'utf8'),
      `${nasSettings}# added by deploy-to-qnap from the workstation's planetarion.env\nPLANETARION_DRILL_SCHEDULE='0 4 * * 0'\n`,
    );
    assert.match(r.stderr, /Executables on the NAS are current/);
    assert.match(r.stderr, /Deployment A-B succeeded/);
    const status = await runTool('deploy-to-qnap', ['--status'], deployEnv(), { cwd: workstation });
    assert.is(status.code, 0, status.stderr);
    assert.match(status.stdout, /^Live: .* \(.*-db, .*-app\)/m);
    assert.match(status.stdout, /^Previous \(for --rollback\): /m);
  },
);

remote(
  'a planetarion.env that would change a key on the NAS: exit 2 with the difference, nothing uploaded; --replace-settings --dry-run shows what it would drop',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const settings = readFileSync(join(nas.dir, 'planetarion.env'), 'utf8');
    const compose = readFileSync(join(nas.dir, 'docker-compose.qnap.yml'), 'utf8');
    const before = readdirSync(nas.dir).sort();
    writeFileSync(
      join(workstation, 'planetarion.env'),
      `PLANETARION_DB_CONTAINER=${nas.container}\nPLANETARION_KEEP=3\n`,
    );
    writeFileSync(join(workstation, 'docker-compose.qnap.yml'), `${compose}# changed\n`);
    const r = await runTool('deploy-to-qnap', nas.deployArgs, deployEnv(), { cwd: workstation });
    assert.is(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      `Error: the workstation's planetarion.env would change PLANETARION_KEEP in ${nas.dir}/planetarion.env; nothing was uploaded\n`,
    );
    assert.match(r.stderr, '  PLANETARION_KEEP: on the NAS "7", here "3"\n');
    assert.match(r.stderr, /--replace-settings/);
    assert.is(readFileSync(join(nas.dir, 'planetarion.env'), 'utf8'), settings);
    assert.is(readFileSync(join(nas.dir, 'docker-compose.qnap.yml'), 'utf8'), compose, 'nothing uploaded');
    assert.equal(readdirSync(nas.dir).sort(), before);
    const plan = await runTool('deploy-to-qnap', [...nas.deployArgs, '--replace-settings', '--dry-run'], deployEnv(), {
      cwd: workstation,
    });
    assert.is(plan.code, 0, plan.stderr);
    assert.match(
      plan.stderr,
      /Settings: --replace-settings: the workstation's planetarion.env replaces .*\n {2}PLANETARION_KEEP: on the NAS "7", here "3"\n {2}PLANETARION_DRILL_SCHEDULE: only on the NAS \(dropped\)\n/,
    );
    assert.is(readFileSync(join(nas.dir, 'planetarion.env'), 'utf8'), settings);
    writeFileSync(join(workstation, 'planetarion.env'), `PLANETARION_DB_CONTAINER=${nas.container}\n`);
    writeFileSync(join(workstation, 'docker-compose.qnap.yml'), compose);
  },
);

remote(
  'SSH refused, a wrong key, a connection that hangs: a clear message, exit 1, nothing changed on the NAS',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const before = readdirSync(nas.dir).sort();
    const refused = await runTool('deploy-to-qnap', [], deployEnv({ QNAP_SSH_PORT: String(await freePort()) }), {
      cwd: workstation,
    });
    assert.is(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /refused/i);
    const otherKey = join(workstation, 'other_key');
    const { newKey } = await import('./helpers/sshd.ts');
    newKey(otherKey);
    const wrongKey = await runTool('deploy-to-qnap', [], deployEnv({ QNAP_SSH_KEY: otherKey }), { cwd: workstation });
    assert.is(wrongKey.code, 1, wrongKey.stderr);
    assert.match(wrongKey.stderr, /permission denied|denied/i);
    const { startSilentListener } = await import('./helpers/sshd.ts');
    const silent = await startSilentListener();
    try {
      const started = Date.now();
      const hung = await runTool(
        'deploy-to-qnap',
        [],
        deployEnv({ QNAP_SSH_PORT: String(silent.port), QNAP_SSH_TIMEOUT: '2' }),
        { cwd: workstation },
      );
      assert.is(hung.code, 1, hung.stderr);
      assert.match(hung.stderr, /time/i);
      assert.ok(Date.now() - started < 60_000);
    } finally {
      await silent.close();
    }
    assert.equal(readdirSync(nas.dir).sort(), before);
  },
);

remote('missing QNAP_IP: exit 2 naming the variable and how to set it', async () => {
  assert.ok(sshd && nas, 'setup failed');
  const empty = makeTempDir('planetarion-ws-');
  try {
    mkdirSync(join(empty, 'x'));
    const r = await runTool('deploy-to-qnap', [], { QNAP_USER: 'root' }, { cwd: empty });
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, /QNAP_IP/);
    assert.match(r.stderr, /\.qnap-deploy\.env/);
  } finally {
    removeTempDir(empty);
  }
});

remote.after(async () => {
  await sshd?.stop();
  nas?.cleanup();
  if (workstation) removeTempDir(workstation);
});
remote.run();
