// deploy-to-qnap with encrypted backups over real SSH: the identity is read on the workstation and
// sent on the SSH session's standard input; it never lands in a file on the NAS, in a log, or in
// the remote process's argv.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, startTool } from './helpers/cli.ts';
import { startSshd, type TestSshd } from './helpers/sshd.ts';
import { makeTestNas, type TestNas } from './helpers/stack.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

let sshd: TestSshd | undefined;
let nas: TestNas | undefined;
let workstation = '';
let keyFile = '';
let secretKey = '';

function deployEnv(): Record<string, string> {
  return {
    QNAP_USER: 'root',
    QNAP_SSH_KEY: sshd!.keyFile,
    QNAP_SSH_PORT: String(sshd!.port),
    QNAP_SSH_KNOWN_HOSTS: sshd!.knownHosts,
    QNAP_SSH_TIMEOUT: '3',
  };
}

/** Every file under a dir (recursively), as paths. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** The argv of every process on this machine (the "NAS" is this machine), NUL turned into spaces. */
function allCommandLines(): Array<{ pid: string; argv: string }> {
  const out: Array<{ pid: string; argv: string }> = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      out.push({ pid, argv: readFileSync(`/proc/${pid}/cmdline`).toString('latin1').replace(/\0/g, ' ') });
    } catch {
      // gone
    }
  }
  return out;
}

const deploy = suite('deploy-to-qnap with age-encrypted backups');

deploy('setup: sshd, a NAS with only the public key in its settings, the identity on the workstation', async () => {
  nas = makeTestNas();
  sshd = await startSshd({
    env: { PATH: `${nas.qnap.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
  });
  workstation = makeTempDir('planetarion-ws-');
  keyFile = join(workstation, 'age-key.txt');
  execFileSync('age-keygen', ['-o', keyFile], { stdio: 'ignore' });
  secretKey = /AGE-SECRET-KEY-1[0-9A-Z]+/.exec(readFileSync(keyFile, 'utf8'))![0];
  const recipient = execFileSync('age-keygen', ['-y', keyFile], { encoding: 'utf8' }).trim();
  writeFileSync(join(workstation, 'docker-compose.qnap.yml'), readFileSync(join(nas.dir, 'docker-compose.qnap.yml')));
  writeFileSync(
    join(workstation, 'planetarion.env'),
    `PLANETARION_DB_CONTAINER=${nas.container}\nPLANETARION_AGE_RECIPIENTS=${recipient}\n`,
  );
  writeFileSync(
    join(workstation, '.qnap-deploy.env'),
    `QNAP_IP=127.0.0.1\nQNAP_USER=root\nQNAP_PROJECT_DIR=${nas.dir}\n`,
  );
  const first = await runTool('deploy-to-qnap', nas.deployArgs, deployEnv(), { cwd: workstation });
  assert.is(first.code, 0, first.stderr);
});

deploy('A-B over a live slot without an identity: exit 2 naming the setting, before anything is started', async () => {
  assert.ok(sshd && nas, 'setup failed');
  const r = await runTool('deploy-to-qnap', nas.deployArgs, deployEnv(), { cwd: workstation });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /PLANETARION_AGE_RECIPIENTS is set/);
  assert.match(r.stderr, /--identity FILE/);
});

deploy(
  'A-B with --identity: the fresh encrypted backup is restored on the NAS; the key is in no NAS file, log or argv',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    // --offline: the slot is filled from the fresh encrypted backup (an online fill restores none).
    const run = startTool('deploy-to-qnap', [...nas.deployArgs, '--offline', '--identity', keyFile], deployEnv(), {
      cwd: workstation,
    });
    let done = false;
    void run.done.then(() => (done = true));
    let sawRemote = false;
    const leaks: string[] = [];
    while (!done) {
      for (const { pid, argv } of allCommandLines()) {
        if (argv.includes(secretKey)) leaks.push(`${pid}: ${argv}`);
        if (argv.includes('--local') && argv.includes('--identity-stdin')) sawRemote = true;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const r = await run.done;
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Deployment A-B succeeded/);
    assert.match(r.stderr, /Checked planetarion_backup_\d{8}_\d{6}\.sql\.gz\.age: .*decrypts and authenticates/);
    assert.ok(sawRemote, 'the remote deploy-to-qnap --local --identity-stdin was seen running');
    assert.equal(leaks, [], 'the secret key was in a process argv');
    assert.not.ok(r.stdout.includes(secretKey) || r.stderr.includes(secretKey), 'not in the workstation output');
    // Nothing on the NAS holds it: settings, logs, state, backups and their sidecars.
    const nasFiles = filesUnder(nas.dir).filter((f) => !f.includes('/bin/') && statSync(f).size < 512 << 20);
    assert.ok(
      nasFiles.some((f) => f.endsWith('.sql.gz.age')),
      nasFiles.join('\n'),
    );
    assert.ok(
      nasFiles.some((f) => f.endsWith('deploy.log')),
      nasFiles.join('\n'),
    );
    for (const file of nasFiles) assert.not.ok(readFileSync(file).includes(secretKey), `the secret key is in ${file}`);
    assert.not.ok(readFileSync(join(nas.dir, 'planetarion.env'), 'utf8').includes('AGE-SECRET-KEY'));
  },
);

deploy.after(async () => {
  await sshd?.stop();
  nas?.cleanup();
  if (workstation) removeTempDir(workstation);
});
deploy.run();
