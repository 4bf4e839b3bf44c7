// The source sync of deploy-to-qnap over real SSH (sshd on 127.0.0.1) into a "NAS" temp dir, with
// the system's tar at both ends: the first sync sends every file, an unchanged tree sends nothing,
// a change sends that file only and a deletion removes it there; the excludes never travel, modes
// and links do, and a dry run changes nothing. No containers.
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { syncSources } from '../lib/remote/sync.ts';
import { Ssh } from '../lib/remote/ssh.ts';
import { startSshd, type TestSshd } from './helpers/sshd.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

let sshd: TestSshd | undefined;
let workstation = '';
let nasDir = '';
const ssh = () =>
  new Ssh(
    {
      host: sshd!.host,
      port: sshd!.port,
      user: sshd!.user,
      keyFile: sshd!.keyFile,
      knownHosts: sshd!.knownHosts,
      timeoutSec: 5,
    },
    { backoffMs: 200, log: () => {} },
  );
const mirror = (path: string) => join(nasDir, 'deploy/sync', path);
const sync = (dryRun = false) => syncSources(ssh(), workstation, ['src'], nasDir, { dryRun });

const test = suite('deploy-to-qnap: sources synced to the NAS, changed files only');

test('setup: sshd on 127.0.0.1, a workstation ./src with code, a link, an executable and excluded folders', async () => {
  sshd = await startSshd();
  workstation = makeTempDir('planetarion-ws-');
  nasDir = makeTempDir('planetarion-nas-');
  cpSync(join(import.meta.dirname, 'fixtures/stack-game/src'), join(workstation, 'src'), { recursive: true });
  chmodSync(join(workstation, 'src/backend/run.sh'), 0o755);
  symlinkSync('backend/run.sh', join(workstation, 'src/run.sh'));
  writeFileSync(join(workstation, 'src/name with spaces.txt'), 'x\n');
  for (const junk of ['.git/HEAD', 'node_modules/m/index.js', 'backend/__pycache__/x.pyc']) {
    mkdirSync(join(workstation, 'src', junk, '..'), { recursive: true });
    writeFileSync(join(workstation, 'src', junk), 'not for the NAS\n');
  }
});

test('a dry run says what would travel and changes nothing; the first sync sends every file, the excludes left out', async () => {
  assert.ok(sshd, 'setup failed');
  const planned = await sync(true);
  assert.is(planned.changed.length, 6);
  assert.not.ok(existsSync(join(nasDir, 'deploy')), 'a dry run wrote');
  const first = await sync();
  assert.equal([first.changed.length, first.removed.length, first.total], [6, 0, 6]);
  assert.is(readFileSync(mirror('src/VERSION'), 'utf8'), 'v1\n');
  assert.is(readFileSync(mirror('src/name with spaces.txt'), 'utf8'), 'x\n');
  assert.is(statSync(mirror('src/backend/run.sh')).mode & 0o777, 0o755);
  assert.ok(lstatSync(mirror('src/run.sh')).isSymbolicLink());
  assert.is(readlinkSync(mirror('src/run.sh')), 'backend/run.sh');
  for (const junk of ['.git', 'node_modules', 'backend/__pycache__'])
    assert.not.ok(existsSync(mirror(`src/${junk}`)), junk);
  assert.is(statSync(mirror('.manifest.json')).mode & 0o777, 0o600);
});

test('unchanged: nothing travels; one file changed and one deleted: that file is sent, the other removed there', async () => {
  assert.ok(sshd, 'setup failed');
  const same = await sync();
  assert.equal([same.changed, same.removed], [[], []]);
  writeFileSync(join(workstation, 'src/VERSION'), 'v2\n');
  rmSync(join(workstation, 'src/name with spaces.txt'));
  writeFileSync(join(workstation, 'src/node_modules/m/index.js'), 'changed, still not for the NAS\n');
  const next = await sync();
  assert.equal(next.changed, ['src/VERSION']);
  assert.equal(next.removed, ['src/name with spaces.txt']);
  assert.is(readFileSync(mirror('src/VERSION'), 'utf8'), 'v2\n');
  assert.not.ok(existsSync(mirror('src/name with spaces.txt')));
  assert.equal((await sync()).changed, []);
  // A mirror whose manifest is gone (a half-done first sync) gets everything again.
  rmSync(mirror('.manifest.json'));
  assert.is((await sync()).changed.length, 5);
});

test.after(async () => {
  await sshd?.stop();
  for (const dir of [workstation, nasDir]) if (dir) removeTempDir(dir);
});
test.run();
