import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCommandLine, type CommandSpec } from '../lib/cli/command.ts';
import { deployConfigFlags, loadDeployConfig, sshTargetOf, type DeployConfigInput } from '../lib/remote/config.ts';
import { ExitCode, UsageError } from '../lib/errors.ts';
import { defaultDir } from '../lib/settings.ts';
import { deployConfigFileName } from '../lib/paths.ts';

const cwd = '/work/game';
const file = `${cwd}/${deployConfigFileName}`;
const keys = new Set(['/home/me/.ssh/nas_ed25519', '/work/game/keys/id', '/work/game/other-key']);

/** A config load with an in-memory .qnap-deploy.env and key files; nothing touches the disk. */
function load(input: Partial<DeployConfigInput> & { fileText?: string } = {}) {
  const { fileText, ...rest } = input;
  return loadDeployConfig({
    cwd,
    env: { HOME: '/home/me' },
    readFile: (p) => (p === file ? fileText : undefined),
    isFile: (p) => keys.has(p),
    dirExists: (p) => ['/work/game', '/tmp', '/home/me/.ssh'].includes(p),
    ...rest,
  });
}

/** The UsageError a load throws. */
function usageError(input: Parameters<typeof load>[0]): UsageError {
  try {
    load(input);
  } catch (error) {
    assert.instance(error, UsageError);
    assert.is((error as UsageError).exitCode, ExitCode.usage);
    return error as UsageError;
  }
  assert.unreachable('expected a UsageError');
  throw new Error('unreachable');
}

const minimal = 'QNAP_IP=nas.local\nQNAP_USER=admin\n';

const defaults = suite('loadDeployConfig defaults');
defaults('project dir, compose file, port, timeout', () => {
  const c = load({ fileText: minimal });
  assert.is(c.host, 'nas.local');
  assert.is(c.user, 'admin');
  assert.is(c.projectDir, defaultDir);
  assert.is(c.projectDir, '/share/CACHEDEV1_DATA/planetarion');
  assert.is(c.composeFile, '/work/game/docker-compose.qnap.yml');
  assert.is(c.sshPort, 22);
  assert.is(c.sshTimeoutSec, 10);
  assert.is(c.sshKey, undefined);
  assert.is(c.knownHosts, undefined);
  assert.is(c.configFile, file);
  assert.is(c.sources.host, 'config');
  assert.is(c.sources.sshPort, 'default');
});
defaults('no file: everything from the environment', () => {
  const c = load({ env: { HOME: '/home/me', QNAP_IP: '127.0.0.1', QNAP_USER: 'root' } });
  assert.is(c.configFile, undefined);
  assert.is(c.host, '127.0.0.1');
  assert.is(c.sources.user, 'env');
});
defaults.run();

const precedence = suite('loadDeployConfig precedence');
precedence('file < environment < flags', () => {
  const c = load({
    fileText: `${minimal}QNAP_SSH_PORT=2222\nQNAP_PROJECT_DIR=/share/file\nDOCKER_COMPOSE_FILE=from-file.yml\nQNAP_SSH_TIMEOUT=4\n`,
    env: { HOME: '/home/me', QNAP_SSH_PORT: '2200', QNAP_PROJECT_DIR: '/share/env', QNAP_USER: 'envuser' },
    flags: { 'ssh-port': '2020', user: 'flaguser' },
  });
  assert.is(c.sshPort, 2020);
  assert.is(c.sources.sshPort, 'flag');
  assert.is(c.user, 'flaguser');
  assert.is(c.projectDir, '/share/env');
  assert.is(c.sources.projectDir, 'env');
  assert.is(c.composeFile, '/work/game/from-file.yml');
  assert.is(c.sources.composeFile, 'config');
  assert.is(c.sshTimeoutSec, 4);
  assert.is(c.host, 'nas.local');
});
precedence('an empty value counts as unset', () => {
  const c = load({ fileText: `${minimal}QNAP_SSH_PORT=\n`, env: { HOME: '/home/me', QNAP_SSH_PORT: '' } });
  assert.is(c.sshPort, 22);
});
precedence("the shell script's file format: export, quotes, comments", () => {
  const c = load({
    fileText: '# deploy target\nexport QNAP_IP="nas.example"\nQNAP_USER=\'admin\'\nQNAP_SSH_KEY=~/.ssh/nas_ed25519\n',
  });
  assert.is(c.host, 'nas.example');
  assert.is(c.user, 'admin');
  assert.is(c.sshKey, '/home/me/.ssh/nas_ed25519');
});
precedence('local paths resolve against the current folder', () => {
  const c = load({
    fileText: minimal,
    flags: { 'ssh-key': 'keys/id', 'known-hosts': '/tmp/kh', 'compose-file': '../other/compose.yml' },
  });
  assert.is(c.sshKey, '/work/game/keys/id');
  assert.is(c.knownHosts, '/tmp/kh');
  assert.is(c.composeFile, '/work/other/compose.yml');
});
precedence('the project dir is normalised', () => {
  assert.is(
    load({ fileText: minimal, flags: { 'project-dir': '/share/x//planetarion/' } }).projectDir,
    '/share/x/planetarion',
  );
});
precedence('sshTargetOf carries the connection settings', () => {
  const c = load({
    fileText: minimal,
    flags: { 'ssh-key': 'other-key', 'ssh-port': '2022', 'known-hosts': '/tmp/kh', 'ssh-timeout': '3' },
  });
  assert.equal(sshTargetOf(c), {
    host: 'nas.local',
    user: 'admin',
    port: 2022,
    keyFile: '/work/game/other-key',
    knownHosts: '/tmp/kh',
    timeoutSec: 3,
  });
});
precedence.run();

const missing = suite('loadDeployConfig missing QNAP_IP / QNAP_USER');
missing('QNAP_IP: names the variable and the three ways to set it', () => {
  const e = usageError({ fileText: 'QNAP_USER=admin\n' });
  assert.match(e.message, /^QNAP_IP is not set/);
  assert.match(e.advice!, `QNAP_IP=nas.local in ${file}`);
  assert.match(e.advice!, 'in the environment');
  assert.match(e.advice!, '--host nas.local');
});
missing('QNAP_USER: names the variable and the three ways to set it', () => {
  const e = usageError({ env: { HOME: '/home/me', QNAP_IP: 'nas' } });
  assert.match(e.message, /^QNAP_USER is not set/);
  assert.match(e.advice!, `QNAP_USER=admin in ${file}`);
  assert.match(e.advice!, '--user admin');
});
missing('QNAP_IP is reported first when both are missing', () => {
  assert.match(usageError({}).message, /^QNAP_IP /);
});
missing.run();

const invalid = suite('loadDeployConfig bad values');
invalid('port out of range or not a number; names where it came from', () => {
  for (const port of ['0', '65536', 'abc', '22x', '-1']) {
    const e = usageError({ fileText: `${minimal}QNAP_SSH_PORT=${port}\n` });
    assert.match(e.message, `invalid QNAP_SSH_PORT in ${file} '${port}': a whole number from 1 to 65535`);
  }
  assert.match(usageError({ fileText: minimal, flags: { 'ssh-port': '70000' } }).message, "invalid --ssh-port '70000'");
  assert.is(load({ fileText: minimal, flags: { 'ssh-port': '65535' } }).sshPort, 65535);
});
invalid('a relative, root or odd project dir', () => {
  assert.match(
    usageError({ fileText: `${minimal}QNAP_PROJECT_DIR=share/planetarion\n` }).message,
    'an absolute path on the NAS',
  );
  assert.match(
    usageError({ fileText: minimal, env: { HOME: '/h', QNAP_PROJECT_DIR: '/' } }).message,
    'a directory below /',
  );
  assert.match(
    usageError({ fileText: minimal, flags: { 'project-dir': '/share/my dir' } }).message,
    'letters, digits and',
  );
  assert.match(
    usageError({ fileText: minimal, flags: { 'project-dir': "/share/x';rm -rf /'" } }).message,
    'letters, digits and',
  );
});
invalid('a host with spaces, shell characters or a leading dash', () => {
  for (const host of ['nas local', 'nas;reboot', '$(id)', '-oProxyCommand=x', 'nas`id`', 'a|b']) {
    const e = usageError({ fileText: 'QNAP_USER=admin\n', flags: { host } });
    assert.match(e.message, 'a host name or IP address');
    assert.match(e.advice!, 'QNAP_IP');
  }
  assert.is(load({ fileText: 'QNAP_USER=a\n', flags: { host: '[::1]' } }).host, '::1');
  assert.is(load({ fileText: 'QNAP_USER=a\n', flags: { host: 'fe80::1%eth0' } }).host, 'fe80::1%eth0');
});
invalid('a user with a leading dash or a space', () => {
  assert.match(usageError({ fileText: 'QNAP_IP=nas\nQNAP_USER=-oops\n' }).message, 'a user name');
  assert.match(usageError({ fileText: 'QNAP_IP=nas\n', flags: { user: 'a b' } }).message, 'a user name');
});
invalid('a key file that does not exist', () => {
  const e = usageError({ fileText: `${minimal}QNAP_SSH_KEY=~/.ssh/missing\n` });
  assert.match(e.message, '/home/me/.ssh/missing does not exist');
  assert.match(e.advice!, '--ssh-key');
});
invalid('a known_hosts file in a missing folder; a bad timeout', () => {
  assert.match(usageError({ fileText: minimal, flags: { 'known-hosts': '/nope/kh' } }).message, '/nope does not exist');
  assert.match(usageError({ fileText: `${minimal}QNAP_SSH_TIMEOUT=0\n` }).message, 'a whole number from 1 to 600');
});
invalid('a line that is not KEY=VALUE', () => {
  assert.match(usageError({ fileText: 'QNAP_IP nas\n' }).message, `invalid ${file}: line 1`);
});
invalid('a .qnap-deploy.env that exists but cannot be read: one line naming it, exit 2', () => {
  const dir = mkdtempSync(join(tmpdir(), 'planetarion-ws-'));
  try {
    // Root reads a file of mode 000, so the real unreadable file here is a directory of that name.
    mkdirSync(join(dir, deployConfigFileName));
    const e = (() => {
      try {
        loadDeployConfig({ cwd: dir, env: {} });
      } catch (error) {
        return error as UsageError;
      }
      throw new Error('expected a UsageError');
    })();
    assert.instance(e, UsageError);
    assert.is(e.exitCode, ExitCode.usage);
    assert.is(e.message, `cannot read ${join(dir, deployConfigFileName)}: it is a directory`);
    assert.match(e.advice!, 'chmod 600');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const denied = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
  assert.is(
    usageError({
      readFile: () => {
        throw denied;
      },
    }).message,
    `cannot read ${file}: permission denied`,
  );
});
invalid.run();

const flags = suite('deployConfigFlags');
flags('parse through a command spec; each names its environment variable', () => {
  const spec: CommandSpec = {
    name: 'deploy-to-qnap',
    usage: '',
    description: '',
    flags: deployConfigFlags,
    settings: [],
    dryRun: true,
    maxPositionals: 0,
    examples: [],
  };
  const { flags: parsed } = parseCommandLine(spec, [
    '--host',
    'nas',
    '--user',
    'admin',
    '--project-dir',
    '/share/p',
    '--compose-file',
    'c.yml',
    '--ssh-key',
    'keys/id',
    '--ssh-port',
    '2222',
    '--known-hosts',
    '/tmp/kh',
    '--ssh-timeout',
    '5',
  ]);
  const c = loadDeployConfig({
    cwd,
    env: {},
    flags: parsed,
    readFile: () => undefined,
    isFile: (p) => keys.has(p),
    dirExists: () => true,
  });
  assert.equal(
    [c.host, c.user, c.projectDir, c.composeFile, c.sshKey, c.sshPort, c.knownHosts, c.sshTimeoutSec],
    ['nas', 'admin', '/share/p', '/work/game/c.yml', '/work/game/keys/id', 2222, '/tmp/kh', 5],
  );
  for (const env of [
    'QNAP_IP',
    'QNAP_USER',
    'QNAP_PROJECT_DIR',
    'DOCKER_COMPOSE_FILE',
    'QNAP_SSH_KEY',
    'QNAP_SSH_PORT',
    'QNAP_SSH_KNOWN_HOSTS',
    'QNAP_SSH_TIMEOUT',
  ]) {
    assert.ok(
      deployConfigFlags.some((f) => f.description.includes(`[env ${env}]`)),
      env,
    );
  }
});
flags.run();
