import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { classifySshFailure, remoteCommandLine, Ssh } from '../lib/remote/ssh.ts';

const classify = suite('classifySshFailure');
classify("ssh's own messages, by kind", () => {
  const cases: [string, ReturnType<typeof classifySshFailure>][] = [
    ['ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n', 'refused'],
    ['ssh: connect to host nas port 22: Connection timed out\n', 'timeout'],
    ['Connection timed out during banner exchange\nConnection to 127.0.0.1 port 4000 timed out\n', 'timeout'],
    ['ssh: connect to host nas port 22: No route to host\n', 'unreachable'],
    ['ssh: Could not resolve hostname nas.invalid: Name or service not known\n', 'dns'],
    ['root@127.0.0.1: Permission denied (publickey).\n', 'auth'],
    ['Received disconnect from 127.0.0.1 port 22:2: Too many authentication failures\n', 'auth'],
    [
      '@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@\nHost key verification failed.\n',
      'host-key-changed',
    ],
    [
      'No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.\n',
      'host-key-unknown',
    ],
    [
      'kex_exchange_identification: Connection closed by remote host\nConnection closed by 127.0.0.1 port 22\n',
      'closed',
    ],
    ['Timeout, server 127.0.0.1 not responding.\n', 'lost'],
    ['Connection to nas closed by remote host.\n', 'lost'],
    ['Connection reset by 127.0.0.1 port 22\n', 'lost'],
    ['client_loop: send disconnect: Broken pipe\n', 'lost'],
  ];
  for (const [stderr, kind] of cases) assert.is(classifySshFailure(stderr), kind, stderr);
});
classify("a remote command's own text is not a connection failure", () => {
  for (const stderr of [
    '',
    'exit 255 on purpose\n',
    'docker: dial unix /var/run/docker.sock: connect: connection refused\n',
    'psql: Permission denied\n',
  ]) {
    assert.is(classifySshFailure(stderr), undefined, stderr);
  }
});
classify.run();

const commandLine = suite('remoteCommandLine');
commandLine('quotes each argument for a POSIX shell', () => {
  assert.is(
    remoteCommandLine(['printf', '%s\n', "it's", 'a b', '$HOME', 'x;y', '']),
    `printf '%s\n' 'it'\\''s' 'a b' '$HOME' 'x;y' ''`,
  );
  assert.is(
    remoteCommandLine(['/share/p/bin/planetarion', 'self-test', '--json']),
    '/share/p/bin/planetarion self-test --json',
  );
});
commandLine('refuses an empty command (ssh would open a login shell)', () => {
  assert.throws(() => remoteCommandLine([]), /no command/);
});
commandLine.run();

const args = suite('Ssh arguments');
args('batch mode, timeouts, keepalives, port, key, known hosts', () => {
  const ssh = new Ssh({
    host: 'nas',
    user: 'admin',
    port: 2222,
    keyFile: '/k/id',
    knownHosts: '/k/known hosts',
    timeoutSec: 7,
  });
  const a = ssh.sshArgs(['uname', '-m']);
  const options = a.filter((_, i) => a[i - 1] === '-o');
  for (const o of [
    'BatchMode=yes',
    'ConnectTimeout=7',
    'ServerAliveInterval=5',
    'ServerAliveCountMax=3',
    'IdentitiesOnly=yes',
    'StrictHostKeyChecking=accept-new',
    'UserKnownHostsFile="/k/known hosts"',
  ]) {
    assert.ok(options.includes(o), o);
  }
  assert.equal(a.slice(-7), ['-p', '2222', '-l', 'admin', '--', 'nas', 'uname -m']);
  assert.is(a[a.indexOf('-i') + 1], '/k/id');
});
args("no key, no known_hosts: ssh's own rules", () => {
  const a = new Ssh({ host: 'nas', user: 'admin', port: 22, timeoutSec: 10 }).sshArgs(['true']);
  assert.not.ok(a.includes('-i'));
  assert.not.ok(a.some((x) => x.startsWith('StrictHostKeyChecking')));
});
args('describe() is a command line that can be pasted into a shell', () => {
  const line = new Ssh({ host: 'nas', user: 'admin', port: 22, timeoutSec: 10 }).describe(['echo', 'a b']);
  assert.match(line, /^ssh -o BatchMode=yes .* -p 22 -l admin -- nas 'echo '\\''a b'\\'''$/);
});
args.run();
