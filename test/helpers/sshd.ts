// The deploy tests' "NAS": Debian's OpenSSH server on 127.0.0.1 with throwaway keys in a temp
// dir, plus the two ways a connection fails without a server (nothing listening; a listener that
// never answers). Only loopback addresses are ever used.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { makeTempDir, removeTempDir } from './tmp.ts';
import { quotePosix } from '../../lib/host/shell.ts';

const loopback = '127.0.0.1';

export interface TestSshd {
  host: string;
  port: number;
  user: string;
  /** A private key the server accepts. */
  keyFile: string;
  /** A known_hosts file that already holds the server's host key for [127.0.0.1]:port. */
  knownHosts: string;
  /** The server's temp dir (config, keys, pid file). */
  dir: string;
  /** What sshd wrote to stderr so far (-e), for post-mortems. */
  log(): string;
  stop(): Promise<void>;
}

/** A port on 127.0.0.1 that nothing listens on (taken from the kernel, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, loopback, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Makes a fresh ed25519 key pair without a passphrase; returns the private key's path. */
export function newKey(path: string, comment = 'planetarion-test'): string {
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  return path;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: loopback, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Starts sshd in the foreground on 127.0.0.1:<free port>, logging in as root with a new key
 * only. No SFTP subsystem: a QNAP serves SFTP only when it is switched on, so uploads must work
 * with scp's legacy protocol. `env` is set in every session (sshd's SetEnv, which overrides
 * PATH too).
 */
export async function startSshd(options: { env?: Record<string, string> } = {}): Promise<TestSshd> {
  const dir = makeTempDir('planetarion-sshd-');
  // sshd insists on its privilege-separation dir.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = newKey(join(dir, 'host_ed25519'), 'planetarion-test-host');
  const keyFile = newKey(join(dir, 'client_ed25519'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${keyFile}.pub`));
  const port = await freePort();
  const knownHosts = join(dir, 'known_hosts');
  const hostPub = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  writeFileSync(knownHosts, `[${loopback}]:${port} ${hostPub}\n`);
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      `ListenAddress ${loopback}`,
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'LogLevel VERBOSE',
      // Sessions' environment (e.g. a PATH with a fake uname, to simulate another NAS).
      ...Object.entries(options.env ?? {}).map(([k, v]) => `SetEnv ${k}=${v}`),
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let running = true;
  // A test run that dies must not leave an sshd behind.
  const killAtExit = () => {
    if (running) child.kill('SIGKILL');
    removeTempDir(dir);
  };
  process.once('exit', killAtExit);
  void exited.then(() => (running = false));

  const until = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (!running || Date.now() > until) {
      child.kill('SIGKILL');
      removeTempDir(dir);
      throw new Error(`sshd did not start on ${loopback}:${port}: ${log.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: loopback,
    port,
    user: 'root',
    keyFile,
    knownHosts,
    dir,
    log: () => log,
    async stop() {
      if (running) {
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        if (running) child.kill('SIGKILL');
      }
      process.removeListener('exit', killAtExit);
      removeTempDir(dir);
    },
  };
}

export interface SilentListener {
  port: number;
  close(): Promise<void>;
}

/** A TCP listener on 127.0.0.1 that accepts connections and never says a word (a hung SSH server). */
export function startSilentListener(): Promise<SilentListener> {
  return new Promise((resolve, reject) => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
    });
    server.once('error', reject);
    server.listen(0, loopback, () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

/** A command run by hand in an SSH session with a terminal (`ssh -tt`), as an operator runs it. */
export interface TerminalSession {
  /** Everything the session's terminal showed so far (stdout and stderr share it). */
  output(): string;
  /** The connection drops: the ssh client dies, sshd hangs up the terminal (SIGHUP, then EIO). */
  lose(): void;
  done: Promise<void>;
}

/**
 * Starts `argv` with `env` over a real SSH session to `sshd`, with a terminal, the way an operator
 * runs restore-database or deploy-to-qnap --local on the NAS. Every value is quoted by the
 * tool's own POSIX quoting.
 */
export function runInTerminal(sshd: TestSshd, env: Record<string, string>, argv: string[]): TerminalSession {
  const command = ['exec', 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv]
    .map(quotePosix)
    .join(' ');
  const client = spawn(
    'ssh',
    [
      '-tt',
      '-o',
      'BatchMode=yes',
      '-o',
      `UserKnownHostsFile=${sshd.knownHosts}`,
      '-o',
      'StrictHostKeyChecking=yes',
      '-i',
      sshd.keyFile,
      '-p',
      String(sshd.port),
      `${sshd.user}@${sshd.host}`,
      command,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let output = '';
  client.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  client.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  const done = new Promise<void>((resolve) => client.once('close', () => resolve()));
  return { output: () => output, lose: () => client.kill('SIGKILL'), done };
}
