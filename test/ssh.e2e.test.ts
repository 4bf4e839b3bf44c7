// The workstation side of deploy-to-qnap against a real sshd on 127.0.0.1 whose "NAS" is a temp
// dir: commands with hard-to-quote arguments, live streaming, probing, uploading the built
// executables (dist/bin/linux-x64), files and images, and every way a connection or the NAS can
// fail. Fallible setup runs in a first "setup" test: uvu 0.5.6 swallows errors thrown in before().
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CliError, ExitCode } from '../lib/errors.ts';
import { probeNas, remoteDocker, shipImage, uploadExecutables, uploadFile } from '../lib/remote/upload.ts';
import { runMain } from '../lib/cli/run-main.ts';
import { quotePosix } from '../lib/host/shell.ts';
import { Ssh, type SshTarget } from '../lib/remote/ssh.ts';
import { distBin } from './helpers/cli.ts';
import { freePort, newKey, startSilentListener, startSshd, type TestSshd } from './helpers/sshd.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

let sshd: TestSshd | undefined;
let work = '';
/** The immutable "NAS dir" of the not-writable test (chattr -i in after and at exit). */
let roDir = '';
const retryLog: string[] = [];

/** An Ssh to the test sshd (or another port/key), with fast backoff and a captured retry log. */
function connect(overrides: Partial<SshTarget> = {}, attempts = 3): Ssh {
  assert.ok(sshd, 'sshd is running (see the setup test)');
  const target: SshTarget = {
    host: sshd.host,
    port: sshd.port,
    user: sshd.user,
    keyFile: sshd.keyFile,
    knownHosts: sshd.knownHosts,
    timeoutSec: 5,
    ...overrides,
  };
  return new Ssh(target, { attempts, backoffMs: 200, log: (line) => retryLog.push(line) });
}

/** Runs body the way every command's entry point does; returns the exit code and what it printed. */
async function asCommand(body: () => Promise<unknown>): Promise<{ code: number; stderr: string }> {
  const err = new PassThrough();
  let stderr = '';
  err.on('data', (d: Buffer) => (stderr += d.toString()));
  const saved = process.exitCode;
  const code = await runMain(async () => void (await body()), err);
  process.exitCode = saved;
  return { code, stderr };
}

/** Every entry under dir with its type, size, mode and mtime: equal snapshots mean nothing changed. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      const s = lstatSync(path);
      out.push(
        `${path.slice(dir.length)} ${s.isDirectory() ? 'd' : s.isSymbolicLink() ? 'l' : 'f'} ${s.size} ${s.mode.toString(8)} ${s.mtimeMs}`,
      );
      if (s.isDirectory()) walk(path);
    }
  };
  out.push(`. ${statSync(dir).mtimeMs}`);
  walk(dir);
  return out;
}

function sh(command: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(command, args, { encoding: 'utf8' });
}

// ------------------------------------------------------------------------------------------------
const ssh = suite('Ssh against a real sshd on 127.0.0.1');
// The sshd serves every suite below; the last suite stops it.
ssh('setup: sshd with throwaway keys on a free loopback port', async () => {
  sshd = await startSshd();
  work = makeTempDir('planetarion-deploy-e2e-');
  // Whatever happens to the run, leave no immutable dir or temp tree behind.
  process.once('exit', () => {
    if (roDir) spawnSync('chattr', ['-i', roDir]);
    removeTempDir(work);
  });
  assert.is(sshd.host, '127.0.0.1');
  const r = await connect().run(['true']);
  assert.is(r.exitCode, 0, sshd.log());
});
ssh('run: arguments with quotes, spaces, $HOME, ; and newlines arrive intact', async () => {
  const tricky = [
    `it's`,
    'two  spaces',
    '$HOME',
    'semi;colon',
    '`id`',
    'a"b',
    'new\nline',
    '',
    '*',
    '&& echo injected',
    '\\back',
  ];
  const r = await connect().run(['printf', '[%s]\\n', ...tricky]);
  assert.is(r.exitCode, 0, r.stderr);
  assert.is(r.stdout, `${tricky.map((t) => `[${t}]`).join('\n')}\n`);
});
ssh('run: stdin input; a failing remote command (even exit 255) is returned, not retried', async () => {
  const s = connect();
  assert.equal(await s.run(['cat'], { input: 'to the NAS\n' }), { exitCode: 0, stdout: 'to the NAS\n', stderr: '' });
  const before = retryLog.length;
  const r = await s.run(['sh', '-c', 'echo oops >&2; exit 255']);
  assert.equal(r, { exitCode: 255, stdout: '', stderr: 'oops\n' });
  const f = await s.run(['sh', '-c', 'exit 3']);
  assert.is(f.exitCode, 3);
  assert.is(retryLog.length, before);
});
ssh('run: a command that outlives timeoutMs is stopped', async () => {
  const started = Date.now();
  try {
    await connect().run(['sleep', '30'], { timeoutMs: 1000 });
    assert.unreachable('expected a timeout');
  } catch (error) {
    assert.instance(error, CliError);
    assert.match((error as Error).message, "'sleep 30' on root@127.0.0.1 did not finish within 1 s");
  }
  // Stopped, not waited for: well before the command's own 30 s (connecting may be slow under load).
  assert.ok(Date.now() - started < 20_000);
});
ssh('stream: output arrives live, stdout and stderr apart, exit code returned', async () => {
  // The remote command waits for a file this test writes only once "first" has arrived here: if
  // the output were passed on at the end, the command would never end (the timeout below).
  const flagDir = makeTempDir('planetarion-stream-');
  const flag = join(flagDir, 'go');
  const out = new PassThrough();
  const err = new PassThrough();
  const seen: string[] = [];
  out.on('data', (d: Buffer) => {
    seen.push(d.toString());
    if (seen.join('').startsWith('first\n')) writeFileSync(flag, '');
  });
  let errText = '';
  err.on('data', (d: Buffer) => (errText += d));
  const script =
    'echo first; n=0; until [ -e "$2" ]; do sleep 0.1; n=$((n+1)); [ $n -lt 1200 ] || exit 9; done; echo "second $1" >&2; echo third; exit 4';
  const code = await connect()
    .stream(['sh', '-c', script, 'sh', 'a b', flag], { stdout: out, stderr: err })
    .finally(() => removeTempDir(flagDir));
  assert.is(code, 4, 'the remote command never saw its go file: "first" did not arrive while it ran');
  assert.is(seen.join(''), 'first\nthird\n');
  assert.is(errText, 'second a b\n');
});
ssh('stream: stdin from a string', async () => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d));
  assert.is(await connect().stream(['wc', '-l'], { stdin: 'a\nb\nc\n', stdout: out }), 0);
  assert.is(text.trim(), '3');
});
ssh('copy: a new known_hosts file learns the host key (accept-new); scp works without SFTP', async () => {
  const knownHosts = join(work, 'fresh_known_hosts');
  const src = join(work, 'hello.txt');
  writeFileSync(src, 'hello\n');
  const dest = join(work, 'copied.txt');
  await connect({ knownHosts }).copy(src, dest);
  assert.is(readFileSync(dest, 'utf8'), 'hello\n');
  // Found under its name whether or not ssh hashes known_hosts entries (Debian does).
  const found = sh('ssh-keygen', ['-F', `[127.0.0.1]:${sshd!.port}`, '-f', knownHosts]);
  assert.is(found.status, 0, readFileSync(knownHosts, 'utf8'));
  assert.match(found.stdout, ' ssh-ed25519 ');
  try {
    await connect().copy(src, 'relative/path');
    assert.unreachable('a relative remote path must be refused');
  } catch (error) {
    assert.match((error as Error).message, 'must be absolute');
  }
});
ssh.run();

// ------------------------------------------------------------------------------------------------
const probe = suite('probeNas');
probe.after(() => {
  if (roDir) sh('chattr', ['-i', roDir]);
});
probe('this machine: x86_64 -> linux-x64, a missing project dir is not created', async () => {
  const dir = join(work, 'nas-probe', 'planetarion');
  const info = await probeNas(connect(), dir);
  assert.is(info.machine, 'x86_64');
  assert.is(info.folder, 'linux-x64');
  assert.match(info.kernel, /^\d+\.\d+/);
  assert.is(info.user, 'root');
  assert.is(info.projectDirExists, false);
  assert.not.ok(existsSync(join(work, 'nas-probe')));
  mkdirSync(dir, { recursive: true });
  assert.is((await probeNas(connect(), dir)).projectDirExists, true);
});
probe(
  'NAS dir not writable (immutable, so even root cannot write): exit 1, names dir and user, nothing changed',
  async () => {
    roDir = join(work, 'nas-readonly');
    mkdirSync(roDir);
    writeFileSync(join(roDir, 'docker-compose.yml'), 'services: {}\n');
    const chattr = sh('chattr', ['+i', roDir]);
    assert.is(chattr.status, 0, `chattr +i: ${chattr.stderr}`);
    const before = snapshot(roDir);
    const { code, stderr } = await asCommand(() => probeNas(connect(), roDir));
    assert.is(code, ExitCode.failed);
    assert.match(stderr, `Error: the project dir ${roDir} is not writable by the NAS user 'root'`);
    assert.match(stderr, 'QNAP_PROJECT_DIR');
    // A dir still to be created below it: the parent is named.
    const below = await asCommand(() => probeNas(connect(), `${roDir}/sub/planetarion`));
    assert.is(below.code, ExitCode.failed);
    assert.match(
      below.stderr,
      `Error: ${roDir}, where the project dir ${roDir}/sub/planetarion would be created, is not writable by the NAS user 'root'`,
    );
    assert.equal(snapshot(roDir), before);
  },
);
probe('a path that is a file: exit 1', async () => {
  const file = join(work, 'hello.txt');
  const { code, stderr } = await asCommand(() => probeNas(connect(), file));
  assert.is(code, ExitCode.failed);
  assert.match(stderr, 'exists but is not a directory');
});
probe.run();

// ------------------------------------------------------------------------------------------------
const otherNas = suite('probeNas on a NAS without a build (simulated uname answers)');
let fakeSshd: TestSshd | undefined;
let fakeBin = '';
otherNas.after(async () => {
  await fakeSshd?.stop();
});
otherNas('setup: an sshd whose sessions find a fake uname first on PATH', async () => {
  fakeBin = join(work, 'fake-bin');
  mkdirSync(fakeBin);
  writeFileSync(
    join(fakeBin, 'uname'),
    '#!/bin/sh\ncase "$1" in -m) cat "$(dirname "$0")/machine";; -r) cat "$(dirname "$0")/kernel";; *) exec /bin/uname "$@";; esac\n',
  );
  chmodSync(join(fakeBin, 'uname'), 0o755);
  writeFileSync(join(fakeBin, 'machine'), 'armv7l\n');
  writeFileSync(join(fakeBin, 'kernel'), '4.2.8\n');
  fakeSshd = await startSshd({
    env: { PATH: `${fakeBin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
  });
  const r = await connect({ port: fakeSshd.port, keyFile: fakeSshd.keyFile, knownHosts: fakeSshd.knownHosts }).run([
    'uname',
    '-m',
  ]);
  assert.is(r.stdout, 'armv7l\n', r.stderr);
});
otherNas('armv7l: exit 1, says which architectures have builds, nothing changed', async () => {
  const dir = join(work, 'nas-armv7');
  mkdirSync(dir);
  const before = snapshot(dir);
  const s = connect({ port: fakeSshd!.port, keyFile: fakeSshd!.keyFile, knownHosts: fakeSshd!.knownHosts });
  const { code, stderr } = await asCommand(async () => {
    const info = await probeNas(s, dir);
    return uploadExecutables(s, join(distBin, '..', info.folder), dir);
  });
  assert.is(code, ExitCode.failed);
  assert.match(stderr, "Error: the NAS's architecture 'armv7l' has no build of these executables");
  assert.match(stderr, 'Builds exist for x86_64 (linux-x64) and aarch64 (linux-arm64)');
  assert.equal(snapshot(dir), before);
});
otherNas('a kernel older than 3.2: exit 1 with the reason', async () => {
  writeFileSync(join(fakeBin, 'machine'), 'x86_64\n');
  writeFileSync(join(fakeBin, 'kernel'), '2.6.32-qnap\n');
  const s = connect({ port: fakeSshd!.port, keyFile: fakeSshd!.keyFile, knownHosts: fakeSshd!.knownHosts });
  const { code, stderr } = await asCommand(() => probeNas(s, join(work, 'nas-armv7')));
  assert.is(code, ExitCode.failed);
  assert.match(
    stderr,
    "Error: the NAS's Linux kernel 2.6.32-qnap is older than 3.2, the oldest the bundled C library (glibc 2.36) runs on",
  );
});
otherNas.run();

// ------------------------------------------------------------------------------------------------
const upload = suite('uploadExecutables');
const nasDir = () => join(work, 'nas', 'planetarion');
let localCopy = '';
upload('setup: the built linux-x64 folder exists', () => {
  assert.ok(existsSync(join(distBin, 'SHA256SUMS')), `run 'node build.mjs' first: ${distBin}`);
});
upload('first upload onto an empty NAS dir: files, links, self-test, no temp left', async () => {
  const result = await uploadExecutables(connect(), distBin, nasDir());
  const sums = readFileSync(join(distBin, 'SHA256SUMS'), 'utf8');
  assert.is(result.action, 'uploaded');
  assert.ok(result.bytes > 50_000_000, `${result.bytes} bytes`);
  assert.is(result.remoteBin, `${nasDir()}/bin`);
  assert.equal(result.commands, [
    'backup-database',
    'deploy-to-qnap',
    'planetarion',
    'restore-database',
    'setup-backup-cron',
  ]);
  assert.is(result.selfTest?.ok, true);
  assert.is(result.selfTest?.arch, 'x86_64');
  assert.is(readFileSync(join(nasDir(), 'bin', 'SHA256SUMS'), 'utf8'), sums);
  // Every file arrived whole and executable bits survived.
  const verify = spawnSync('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], {
    cwd: join(nasDir(), 'bin'),
    encoding: 'utf8',
  });
  assert.is(verify.status, 0, verify.stdout + verify.stderr);
  assert.ok(statSync(join(nasDir(), 'bin', 'runtime', 'planetarion')).mode & 0o100);
  for (const name of result.commands) {
    assert.ok(lstatSync(join(nasDir(), name)).isSymbolicLink(), name);
    assert.is(readlinkSync(join(nasDir(), name)), `bin/${name}`);
  }
  // The links run the right command (launchers resolve links with readlink -f).
  const version = sh(join(nasDir(), 'backup-database'), ['--version']);
  assert.is(version.status, 0, version.stderr);
  assert.match(version.stdout, /^planetarion-backup \d+\.\d+\.\d+ \(node v\d+\.\d+\.\d+, linux-(x64|arm64)\)\n$/);
  assert.equal(
    readdirSync(nasDir()).filter((n) => n.startsWith('.')),
    [],
  );
});
upload('second upload: skipped (SHA256SUMS match), links kept', async () => {
  const inode = statSync(join(nasDir(), 'bin', 'runtime', 'planetarion')).ino;
  const result = await uploadExecutables(connect(), distBin, nasDir());
  assert.is(result.action, 'skipped');
  assert.is(result.bytes, 0);
  assert.is(statSync(join(nasDir(), 'bin', 'runtime', 'planetarion')).ino, inode);
  assert.ok(lstatSync(join(nasDir(), 'planetarion')).isSymbolicLink());
});
upload('a changed local SHA256SUMS forces a re-upload, swapped in with no leftovers', async () => {
  localCopy = join(work, 'local-linux-x64');
  cpSync(distBin, localCopy, { recursive: true });
  const launcher = join(localCopy, 'setup-backup-cron');
  writeFileSync(launcher, `${readFileSync(launcher, 'utf8')}# changed for the re-upload test\n`);
  const sum = createHash('sha256').update(readFileSync(launcher)).digest('hex');
  const sumsPath = join(localCopy, 'SHA256SUMS');
  writeFileSync(sumsPath, readFileSync(sumsPath, 'utf8').replace(/^[0-9a-f]{64}( {2}setup-backup-cron)$/m, `${sum}$1`));
  const result = await uploadExecutables(connect(), localCopy, nasDir());
  assert.is(result.action, 'uploaded');
  assert.is(result.selfTest?.ok, true);
  assert.match(readFileSync(join(nasDir(), 'bin', 'setup-backup-cron'), 'utf8'), '# changed for the re-upload test');
  assert.is(readFileSync(join(nasDir(), 'bin', 'SHA256SUMS'), 'utf8'), readFileSync(sumsPath, 'utf8'));
  assert.equal(
    readdirSync(nasDir()).filter((n) => n.startsWith('.')),
    [],
  );
  assert.is(sh(join(nasDir(), 'setup-backup-cron'), ['--version']).status, 0);
});
upload('a copy that does not match its SHA256SUMS is refused; the executables in place are kept', async () => {
  const broken = join(work, 'local-broken');
  cpSync(localCopy, broken, { recursive: true });
  writeFileSync(join(broken, 'restore-database'), '#!/bin/sh\necho tampered\n');
  // SHA256SUMS must differ from the NAS's, or the upload is skipped: a wrong line for another file.
  const sumsPath = join(broken, 'SHA256SUMS');
  writeFileSync(
    sumsPath,
    readFileSync(sumsPath, 'utf8').replace(/^[0-9a-f]{64}( {2}deploy-to-qnap)$/m, `${'0'.repeat(64)}$1`),
  );
  // Everything but the dir's own mtime (the temp upload folder came and went) stays as it was.
  const before = snapshot(nasDir()).slice(1);
  const { code, stderr } = await asCommand(() => uploadExecutables(connect(), broken, nasDir()));
  assert.is(code, ExitCode.failed);
  assert.match(stderr, 'Error: the uploaded executables do not run on the NAS');
  assert.match(stderr, 'do not match SHA256SUMS');
  assert.match(stderr, `The executables in ${nasDir()}/bin were left as they were`);
  assert.equal(snapshot(nasDir()).slice(1), before);
});
upload.run();

// ------------------------------------------------------------------------------------------------
const files = suite('uploadFile');
files('renamed into place with its mode; no temp left; an existing file is replaced', async () => {
  const dir = nasDir();
  const compose = join(work, 'docker-compose.qnap.yml');
  writeFileSync(compose, 'services:\n  db:\n    image: planetarion-test-pg\n');
  const settings = join(work, 'planetarion.env');
  writeFileSync(settings, 'PLANETARION_KEEP=5\n');
  chmodSync(settings, 0o644);
  const c = await uploadFile(connect(), compose, `${dir}/docker-compose.yml`, { mode: 0o644 });
  assert.equal(c, { remotePath: `${dir}/docker-compose.yml`, bytes: statSync(compose).size });
  const s = await uploadFile(connect(), settings, `${dir}/planetarion.env`);
  assert.is(readFileSync(join(dir, 'docker-compose.yml'), 'utf8'), readFileSync(compose, 'utf8'));
  assert.is(statSync(join(dir, 'docker-compose.yml')).mode & 0o777, 0o644);
  assert.is(readFileSync(s.remotePath, 'utf8'), 'PLANETARION_KEEP=5\n');
  assert.is(statSync(s.remotePath).mode & 0o777, 0o600);
  writeFileSync(settings, 'PLANETARION_KEEP=7\n');
  await uploadFile(connect(), settings, `${dir}/planetarion.env`);
  assert.is(readFileSync(s.remotePath, 'utf8'), 'PLANETARION_KEEP=7\n');
  assert.equal(
    readdirSync(dir).filter((n) => n.startsWith('.')),
    [],
  );
  // Into a dir that does not exist yet.
  await uploadFile(connect(), compose, `${work}/nas/new-dir/compose.yml`);
  assert.ok(existsSync(`${work}/nas/new-dir/compose.yml`));
});
files('a missing local file: exit 1 naming it', async () => {
  const { code, stderr } = await asCommand(() => uploadFile(connect(), join(work, 'nope.yml'), `${nasDir()}/x.yml`));
  assert.is(code, ExitCode.failed);
  assert.match(stderr, `Error: ${join(work, 'nope.yml')} cannot be read`);
});
files.run();

// ------------------------------------------------------------------------------------------------
// Workstation and "NAS" share one Docker daemon here. To see an image come back, the workstation's
// docker is a stand-in that answers `image inspect` and `save` from a tar the real `docker save`
// wrote before the image was removed; the NAS side (ssh, finding docker, docker load) is real.
const images = suite('shipImage');
const tag = `planetarion-ship-test:${process.pid}-${Date.now()}`;
let imageId = '';
let localDocker = '';
images.after(() => {
  sh('docker', ['rmi', '-f', tag]);
});
images('setup: a tiny image, saved to a tar; a stand-in workstation docker that serves it', () => {
  const root = join(work, 'image-root');
  mkdirSync(root);
  writeFileSync(join(root, 'hello'), `shipped ${tag}\n`);
  const tar = join(work, 'image-root.tar');
  assert.is(sh('tar', ['-C', root, '-cf', tar, '.']).status, 0);
  const imported = sh('docker', ['import', tar, tag]);
  assert.is(imported.status, 0, imported.stderr);
  imageId = sh('docker', ['image', 'inspect', '--format', '{{.Id}}', tag]).stdout.trim();
  assert.match(imageId, /^sha256:[0-9a-f]{64}$/);
  const saved = join(work, 'image-saved.tar');
  assert.is(sh('docker', ['save', '-o', saved, tag]).status, 0);
  localDocker = join(work, 'workstation-docker');
  writeFileSync(
    localDocker,
    `#!/bin/sh\ncase "$1" in\n  image) [ "$5" = ${quotePosix(tag)} ] && echo ${quotePosix(imageId)};;\n  save) [ "$2" = ${quotePosix(tag)} ] && exec cat ${quotePosix(saved)};;\n  *) exit 2;;\nesac\n`,
  );
  chmodSync(localDocker, 0o755);
});
images('the NAS has it already: skipped', async () => {
  const result = await shipImage(connect(), tag);
  assert.equal(result, { image: tag, id: imageId, action: 'skipped', bytes: 0 });
});
images('docker save | ssh docker load: the removed image is back with the same ID', async () => {
  assert.is(sh('docker', ['rmi', tag]).status, 0);
  assert.is(sh('docker', ['image', 'inspect', tag]).status, 1);
  const result = await shipImage(connect(), tag, { docker: localDocker });
  assert.is(result.action, 'shipped');
  assert.is(result.id, imageId);
  assert.is(result.bytes, statSync(join(work, 'image-saved.tar')).size);
  assert.is(sh('docker', ['image', 'inspect', '--format', '{{.Id}}', tag]).stdout.trim(), imageId);
  // The remote snippet finds docker the way it will on the NAS.
  const r = await connect().run(remoteDocker(['image', 'inspect', '--format', '{{.Id}}', tag]));
  assert.is(r.stdout.trim(), imageId);
});
images('an image that is not here: exit 1', async () => {
  const { code, stderr } = await asCommand(() => shipImage(connect(), 'planetarion-no-such-image:nope'));
  assert.is(code, ExitCode.failed);
  assert.match(stderr, "Error: the image 'planetarion-no-such-image:nope' is not on this machine");
});
images('a NAS without docker: exit 1, says where it looked', async () => {
  // A PATH with a shell and nothing else (docker lives in /usr/bin here).
  const bareBin = join(work, 'bare-bin');
  mkdirSync(bareBin);
  symlinkSync('/bin/sh', join(bareBin, 'sh'));
  const bare = await startSshd({ env: { PATH: bareBin } });
  try {
    const s = connect({ port: bare.port, keyFile: bare.keyFile, knownHosts: bare.knownHosts });
    const { code, stderr } = await asCommand(() => shipImage(s, tag));
    assert.is(code, ExitCode.failed);
    assert.match(
      stderr,
      'Error: docker was not found on the NAS (not on PATH, not in /share/*/.qpkg/container-station/bin)',
      stderr,
    );
  } finally {
    await bare.stop();
  }
});
images.run();

// ------------------------------------------------------------------------------------------------
const faults = suite('connection failures: clear message, exit 1, nothing changed on the NAS');
let faultDir = '';
faults.after(async () => {
  await sshd?.stop();
  sshd = undefined;
  if (work) removeTempDir(work);
});
faults('setup: a NAS dir with something in it', () => {
  faultDir = nasDir();
  assert.ok(existsSync(join(faultDir, 'bin', 'SHA256SUMS')));
});
/** probe + upload the way deploy-to-qnap does, as a command; the NAS dir must be untouched. */
async function deployAttempt(s: Ssh): Promise<{ code: number; stderr: string; ms: number }> {
  const before = snapshot(faultDir);
  const started = Date.now();
  const outcome = await asCommand(async () => {
    const info = await probeNas(s, faultDir);
    await uploadExecutables(s, join(distBin, '..', info.folder), faultDir);
  });
  const ms = Date.now() - started;
  assert.equal(snapshot(faultDir), before);
  return { ...outcome, ms };
}
faults('connection refused (nothing listening): retried 3 times, names the port', async () => {
  const port = await freePort();
  retryLog.length = 0;
  const { code, stderr } = await deployAttempt(connect({ port }));
  assert.is(code, ExitCode.failed);
  assert.match(stderr, `Error: cannot reach root@127.0.0.1 port ${port}: connection refused (tried 3 times)`);
  assert.match(stderr, `Nothing is listening on port ${port} of 127.0.0.1`);
  assert.match(stderr, 'QNAP_SSH_PORT');
  assert.is(retryLog.length, 2);
  assert.match(retryLog[0]!, 'connection refused; trying again in 0.2 s (attempt 2 of 3)');
  assert.match(retryLog[1]!, 'trying again in 0.4 s (attempt 3 of 3)');
});
faults('wrong key: not retried, names the key file and the user', async () => {
  const wrongKey = newKey(join(work, 'unrelated_ed25519'));
  retryLog.length = 0;
  const { code, stderr } = await deployAttempt(connect({ keyFile: wrongKey }));
  assert.is(code, ExitCode.failed);
  assert.match(
    stderr,
    `Error: cannot log in to root@127.0.0.1 port ${sshd!.port}: permission denied [ssh: root@127.0.0.1: Permission denied (publickey).]`,
  );
  assert.match(stderr, `The NAS refused the key ${wrongKey} for user 'root'`);
  assert.match(stderr, `${wrongKey}.pub`);
  assert.equal(retryLog, []);
});
faults('a listener that never answers: the connect timeout fires on each of 3 attempts', async () => {
  const silent = await startSilentListener();
  try {
    retryLog.length = 0;
    const { code, stderr, ms } = await deployAttempt(connect({ port: silent.port, timeoutSec: 2 }));
    assert.is(code, ExitCode.failed);
    assert.match(
      stderr,
      `Error: cannot reach root@127.0.0.1 port ${silent.port}: connection timed out (tried 3 times)`,
    );
    assert.match(stderr, 'No answer within the 2 s timeout');
    assert.match(stderr, 'QNAP_SSH_TIMEOUT');
    // 3 x 2 s plus 0.2 + 0.4 s of backoff.
    assert.ok(ms >= 6000 && ms < 10_000, `took ${ms} ms`);
    assert.is(retryLog.length, 2);
  } finally {
    await silent.close();
  }
});
faults('a changed host key: refused, not retried, says how to fix it', async () => {
  const otherHostKey = newKey(join(work, 'other_host_ed25519'));
  const knownHosts = join(work, 'wrong_known_hosts');
  writeFileSync(
    knownHosts,
    `[127.0.0.1]:${sshd!.port} ${readFileSync(`${otherHostKey}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`,
  );
  retryLog.length = 0;
  const { code, stderr } = await deployAttempt(connect({ knownHosts }));
  assert.is(code, ExitCode.failed);
  assert.match(stderr, `Error: refusing to connect to root@127.0.0.1 port ${sshd!.port}: host key mismatch`);
  assert.match(stderr, `differs from the one recorded in ${knownHosts}`);
  assert.match(stderr, `ssh-keygen -R '[127.0.0.1]:${sshd!.port}' -f ${knownHosts}`);
  assert.equal(retryLog, []);
});
faults.run();
