// SSH and scp to the NAS over the real OpenSSH binaries: batch mode (never a password prompt),
// connect timeouts, keepalives, retries of connection failures with exponential backoff, and
// errors that say what to do. Remote command lines are built by quoting every argument for the
// NAS's POSIX shell, because ssh joins its arguments into one string the remote shell parses.
import { spawn, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { CliError } from '../errors.ts';
import { quotePosix } from '../host/shell.ts';

/** Where and how to connect. */
export interface SshTarget {
  host: string;
  user: string;
  port: number;
  /** Private key file (`-i`, with IdentitiesOnly so the agent's keys are not tried first). */
  keyFile?: string | undefined;
  /** known_hosts file: StrictHostKeyChecking=accept-new against it. Unset: ssh's own files and rules. */
  knownHosts?: string | undefined;
  /** ConnectTimeout in seconds (covers the TCP connect and the SSH banner exchange). */
  timeoutSec: number;
}

export interface SshOptions {
  /** Connection attempts before giving up on a connection failure (default 3). */
  attempts?: number;
  /** First backoff delay; doubles after each failed attempt (default 1000 ms). */
  backoffMs?: number;
  /** Where retry notices go (default: stderr). */
  log?: (line: string) => void;
  /** The ssh and scp binaries (default: found on PATH). */
  sshBinary?: string;
  scpBinary?: string;
}

export interface SshResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Sent to the remote command's stdin. */
  input?: string | Buffer;
  /** Stops the whole command (connect included) after this long (default 120 s + connect timeout). */
  timeoutMs?: number;
}

export interface StreamOptions {
  /** The remote command's stdin: a string, or a stream piped with backpressure (never buffered). */
  stdin?: Readable | string;
  /** Where the remote stdout goes, live (default: our stdout; it is not ended). */
  stdout?: Writable;
  /** Where the remote stderr goes, live (default: our stderr; it is not ended). */
  stderr?: Writable;
}

export interface CopyOptions {
  recursive?: boolean;
}

/** Why an ssh or scp run failed to reach the remote command. */
export type SshFailureKind =
  | 'refused'
  | 'timeout'
  | 'unreachable'
  | 'closed'
  | 'dns'
  | 'auth'
  | 'host-key-changed'
  | 'host-key-unknown'
  | 'lost';

/** Failures that happen before the remote command starts, so trying again cannot run it twice. */
const retryableKinds: ReadonlySet<SshFailureKind> = new Set(['refused', 'timeout', 'unreachable', 'closed']);

/** ssh's own messages, most specific first. Anchored on ssh's wording so a remote command's text is not mistaken for them. */
const failurePatterns: [SshFailureKind, RegExp][] = [
  ['host-key-changed', /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed/],
  ['host-key-unknown', /Host key verification failed|No \S+ host key is known for/],
  ['auth', /Permission denied \(|Too many authentication failures/],
  // Before the session: the server hung up during the banner/key exchange (restarting, MaxStartups, blocked address).
  ['closed', /^(kex|ssh)_exchange_identification: /m],
  // Possibly during the command: never retried, the command may have run.
  [
    'lost',
    /^Timeout, server .* not responding|^Connection to .* closed by remote host|^client_loop: |^packet_write_wait: |^Connection (closed|reset) by \S+ port \d+/m,
  ],
  ['refused', /^ssh: connect to host .*: Connection refused/m],
  [
    'timeout',
    /^ssh: connect to host .*: (Connection|Operation) timed out|^Connection timed out during banner exchange|^Connection to .* port \d+ timed out/m,
  ],
  ['unreachable', /^ssh: connect to host .*: (No route to host|Network is unreachable|Host is unreachable)/m],
  ['dns', /^ssh: Could not resolve hostname/m],
];

/** Classifies ssh's stderr; undefined when it shows no connection failure. Pure. */
export function classifySshFailure(stderr: string): SshFailureKind | undefined {
  return failurePatterns.find(([, re]) => re.test(stderr))?.[0];
}

/** The remote command line for argv: each argument quoted for a POSIX shell, joined by spaces. */
export function remoteCommandLine(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('remoteCommandLine: no command (ssh would open a login shell)');
  return argv.map(quotePosix).join(' ');
}

/** Remote paths must mean the same to scp's SFTP mode (literal) and its legacy mode (parsed by the NAS's shell). */
const safeRemotePath = /^\/[\w@%+=:,./-]*$/;

/** ssh option values expand %-tokens and split on whitespace: escape both. */
function sshOptionPath(path: string): string {
  const escaped = path.replace(/%/g, '%%');
  return /\s/.test(escaped) ? `"${escaped}"` : escaped;
}

const stderrTailBytes = 64 * 1024;

interface Exec {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

interface ExecIo {
  input?: string | Buffer | Readable;
  stdout?: Writable;
  stderr?: Writable;
  timeoutMs?: number;
}

/** Runs a binary with argv (no shell); captures or forwards its output; kills it at the timeout. */
function exec(binary: string, args: string[], io: ExecIo): Promise<Exec> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(binary, args, { stdio: [io.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    if (io.stdout) child.stdout!.pipe(io.stdout, { end: false });
    else child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      // Forwarded output is kept only as a tail, for classifying failures.
      if (io.stderr && stderr.length > stderrTailBytes) stderr = stderr.slice(-stderrTailBytes);
    });
    if (io.stderr) child.stderr!.on('data', (d: string) => io.stderr!.write(d));
    if (child.stdin) {
      // The remote side may stop reading (a failed command): that is its exit code's story, not a crash.
      child.stdin.on('error', () => {});
      if (typeof io.input === 'string' || Buffer.isBuffer(io.input)) child.stdin.end(io.input);
      else if (io.input) io.input.pipe(child.stdin);
    }
    let killTimer: NodeJS.Timeout | undefined;
    const timer =
      io.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGTERM');
            killTimer = setTimeout(() => child.kill('SIGKILL'), 2000);
          }, io.timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      const code = (error as NodeJS.ErrnoException).code;
      reject(
        code === 'ENOENT'
          ? new CliError(`'${binary}' was not found on this machine`, {
              advice: 'Install the OpenSSH client (ssh and scp).',
              cause: error,
            })
          : error,
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      if (io.input && typeof io.input !== 'string' && !Buffer.isBuffer(io.input)) io.input.unpipe(child.stdin!);
      resolvePromise({ exitCode: code ?? (signal ? 128 + (signalNumbers[signal] ?? 0) : 1), stdout, stderr, timedOut });
    });
  });
}

const signalNumbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGPIPE: 13, SIGTERM: 15 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const scpLegacyFlag = new Map<string, boolean>();

/**
 * Whether this scp has `-O` (legacy protocol, OpenSSH >= 8.7). OpenSSH 9 defaults to SFTP, which
 * a QNAP serves only when "Enable SFTP" is ticked (off by default); the legacy protocol needs just
 * `scp` on the NAS. Same detection as git-review's: the flag letters in scp's usage line.
 */
function scpSupportsLegacyFlag(scp: string): boolean {
  let known = scpLegacyFlag.get(scp);
  if (known === undefined) {
    const usage = spawnSync(scp, [], { encoding: 'utf8' }).stderr ?? '';
    known = /usage: scp \[-[0-9A-Za-z]*O[0-9A-Za-z]*\]/.test(usage);
    scpLegacyFlag.set(scp, known);
  }
  return known;
}

/** A connection to the NAS: runs commands, streams them, copies files. */
export class Ssh {
  readonly target: SshTarget;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly log: (line: string) => void;
  private readonly sshBinary: string;
  private readonly scpBinary: string;

  constructor(target: SshTarget, options: SshOptions = {}) {
    this.target = target;
    this.attempts = options.attempts ?? 3;
    this.backoffMs = options.backoffMs ?? 1000;
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.sshBinary = options.sshBinary ?? 'ssh';
    this.scpBinary = options.scpBinary ?? 'scp';
  }

  /** `user@host` (port separate), for messages. */
  get destination(): string {
    return `${this.target.user}@${this.target.host}`;
  }

  /** Options ssh and scp share: batch mode, timeouts, keepalives, key, host keys. */
  private commonOptions(): string[] {
    const t = this.target;
    const options = [
      '-o',
      'BatchMode=yes',
      '-o',
      `ConnectTimeout=${t.timeoutSec}`,
      '-o',
      'ServerAliveInterval=5',
      '-o',
      'ServerAliveCountMax=3',
    ];
    if (t.keyFile) options.push('-i', sshOptionPath(t.keyFile), '-o', 'IdentitiesOnly=yes');
    if (t.knownHosts)
      options.push('-o', 'StrictHostKeyChecking=accept-new', '-o', `UserKnownHostsFile=${sshOptionPath(t.knownHosts)}`);
    return options;
  }

  /** The full argv of `ssh` for a remote command (for --dry-run plans and logs). */
  sshArgs(argv: readonly string[]): string[] {
    return [
      ...this.commonOptions(),
      '-p',
      String(this.target.port),
      '-l',
      this.target.user,
      '--',
      this.target.host,
      remoteCommandLine(argv),
    ];
  }

  /** A copy-and-pasteable `ssh ...` line for argv, for --dry-run plans. */
  describe(argv: readonly string[]): string {
    return [this.sshBinary, ...this.sshArgs(argv)].map(quotePosix).join(' ');
  }

  /**
   * Runs argv on the NAS and captures its output. A non-zero exit of the remote command is
   * returned, not thrown; a connection failure is retried (when nothing can have run yet) and
   * then thrown as a CliError with advice.
   */
  async run(argv: readonly string[], options: RunOptions = {}): Promise<SshResult> {
    const args = this.sshArgs(argv);
    const timeoutMs = options.timeoutMs ?? 120_000 + this.target.timeoutSec * 1000;
    const result = await this.withRetries(
      argv,
      true,
      () => exec(this.sshBinary, args, { input: options.input, timeoutMs }),
      (r) => r.exitCode === 255,
    );
    if (result.timedOut) {
      throw new CliError(
        `'${remoteCommandLine(argv)}' on ${this.destination} did not finish within ${Math.round(timeoutMs / 1000)} s and was stopped`,
        {
          advice: 'The NAS may be overloaded or the command stuck; check it over SSH and run again.',
        },
      );
    }
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr };
  }

  /** Runs argv on the NAS; a non-zero exit becomes a CliError naming `what` with the remote stderr. Returns stdout. */
  async check(argv: readonly string[], what: string, options: RunOptions = {}): Promise<string> {
    const result = await this.run(argv, options);
    if (result.exitCode !== 0) {
      const detail = (result.stderr || result.stdout).trim().split('\n').slice(-5).join('\n');
      throw new CliError(
        `${what} failed on ${this.destination} (exit ${result.exitCode})${detail ? `: ${detail}` : ''}`,
      );
    }
    return result.stdout;
  }

  /**
   * Runs argv on the NAS with its stdout and stderr passed through live; resolves with its exit
   * code. Retried only when the stdin is a string (a stream cannot be replayed): check the
   * connection first (`run(['true'])`) before streaming one in.
   */
  async stream(argv: readonly string[], options: StreamOptions = {}): Promise<number> {
    const args = this.sshArgs(argv);
    const io: ExecIo = {
      input: options.stdin,
      stdout: options.stdout ?? process.stdout,
      stderr: options.stderr ?? process.stderr,
    };
    const replayable = options.stdin === undefined || typeof options.stdin === 'string';
    const result = await this.withRetries(
      argv,
      replayable,
      () => exec(this.sshBinary, args, io),
      (r) => r.exitCode === 255,
    );
    return result.exitCode;
  }

  /** Copies a local file (or folder, with recursive) to an absolute path on the NAS with scp. */
  async copy(localPath: string, remotePath: string, options: CopyOptions = {}): Promise<void> {
    if (!safeRemotePath.test(remotePath))
      throw new Error(
        `copy: remote path must be absolute and plain (letters, digits, _ . - / @ % + = : ,): ${remotePath}`,
      );
    const legacy = scpSupportsLegacyFlag(this.scpBinary);
    const host = this.target.host.includes(':') ? `[${this.target.host}]` : this.target.host;
    const args = [
      ...(legacy ? ['-O'] : []),
      '-q',
      '-p',
      ...(options.recursive ? ['-r'] : []),
      ...this.commonOptions(),
      '-P',
      String(this.target.port),
      '--',
      resolve(localPath),
      `${this.target.user}@${host}:${remotePath}`,
    ];
    const what = [`scp ${resolve(localPath)} to ${remotePath}`];
    // scp exits 1 for any failure; ssh's messages in its stderr tell a connection failure apart.
    const result = await this.withRetries(
      what,
      true,
      () => exec(this.scpBinary, args, {}),
      (r) => r.exitCode !== 0,
    );
    if (result.exitCode !== 0) {
      throw new CliError(
        `copying ${localPath} to ${this.destination}:${remotePath} failed: ${result.stderr.trim() || `scp exit ${result.exitCode}`}`,
        {
          advice: 'Check the free space and permissions of that folder on the NAS.',
        },
      );
    }
  }

  /** Runs attempt() until it does not fail to connect; connection failures become CliErrors with advice. */
  private async withRetries(
    argv: readonly string[],
    replayable: boolean,
    attempt: () => Promise<Exec>,
    failed: (r: Exec) => boolean,
  ): Promise<Exec> {
    for (let n = 1; ; n++) {
      const result = await attempt();
      const kind = failed(result) && !result.timedOut ? classifySshFailure(result.stderr) : undefined;
      if (!kind) return result;
      if (replayable && retryableKinds.has(kind) && n < this.attempts) {
        const delay = this.backoffMs * 2 ** (n - 1);
        this.log(
          `ssh to ${this.destination} port ${this.target.port}: ${failureSummary[kind]}; trying again in ${(delay / 1000).toFixed(1)} s (attempt ${n + 1} of ${this.attempts})`,
        );
        await sleep(delay);
        continue;
      }
      throw this.connectionError(kind, n, result.stderr, argv);
    }
  }

  private connectionError(kind: SshFailureKind, tries: number, stderr: string, argv: readonly string[]): CliError {
    const t = this.target;
    const where = `${this.destination} port ${t.port}`;
    const said = (
      stderr
        .trim()
        .split('\n')
        .filter((l) => !/^@+$|^\s*$/.test(l))
        .slice(-1)[0] ?? ''
    ).replace(/^ssh: /, '');
    const tried = tries > 1 ? ` (tried ${tries} times)` : '';
    const verb =
      kind === 'auth'
        ? 'cannot log in to'
        : kind === 'lost'
          ? 'lost the connection to'
          : kind.startsWith('host-key')
            ? 'refusing to connect to'
            : 'cannot reach';
    const message = `${verb} ${where}: ${failureSummary[kind]}${tried}${said ? ` [ssh: ${said}]` : ''}`;
    const keyText = t.keyFile ? `the key ${t.keyFile}` : "ssh's default keys (QNAP_SSH_KEY is not set)";
    const knownHosts = t.knownHosts ?? '~/.ssh/known_hosts';
    const advice: Record<SshFailureKind, string> = {
      refused: `Nothing is listening on port ${t.port} of ${t.host}. Check that SSH is enabled on the NAS (Control Panel > Network & File Services > Telnet / SSH) and that QNAP_SSH_PORT (--ssh-port) is its port.`,
      timeout: `No answer within the ${t.timeoutSec} s timeout: the NAS is off or unreachable, QNAP_IP (--host) is wrong, or a firewall drops the connection. On a slow network raise QNAP_SSH_TIMEOUT (--ssh-timeout).`,
      unreachable: `There is no route to ${t.host}: check QNAP_IP (--host) and this machine's network.`,
      closed: `The NAS closed the connection before logging in: its SSH service may be restarting or refusing this address (QNAP's Network Access Protection blocks addresses after failed logins).`,
      dns: `The name ${t.host} does not resolve: check QNAP_IP (--host), or use the NAS's IP address.`,
      auth: `The NAS refused ${keyText} for user '${t.user}'. Add the matching public key${t.keyFile ? ` (${t.keyFile}.pub)` : ''} to ~/.ssh/authorized_keys of '${t.user}' on the NAS, or set QNAP_SSH_KEY (--ssh-key) / QNAP_USER (--user). Repeated failures can make the NAS block this address.${/UNPROTECTED PRIVATE KEY FILE|bad permissions/.test(stderr) ? ` ssh ignored the key because its permissions are too open: chmod 600 ${t.keyFile ?? 'it'}.` : ''}`,
      'host-key-changed': `The NAS's host key differs from the one recorded in ${knownHosts}. If the NAS was reset or its key changed on purpose, remove the old entry (ssh-keygen -R '[${t.host}]:${t.port}' -f ${knownHosts}) and run again; otherwise someone may be intercepting the connection: stop.`,
      'host-key-unknown': `The NAS's host key is not known yet and batch mode cannot ask. Connect once by hand (ssh -p ${t.port} ${this.destination}) and accept it, or set QNAP_SSH_KNOWN_HOSTS (--known-hosts) to a file where a new key is recorded automatically.`,
      lost: `If it dropped while '${remoteCommandLine(argv)}' was running, that may have finished or still be running on the NAS: check the NAS (deploy-to-qnap --status) before running again.`,
    };
    return new CliError(message, { advice: advice[kind], cause: new Error(stderr) });
  }
}

/** One phrase per failure, for messages and retry notices. */
const failureSummary: Record<SshFailureKind, string> = {
  refused: 'connection refused',
  timeout: 'connection timed out',
  unreachable: 'host unreachable',
  closed: 'connection closed before login',
  dns: 'host name not found',
  auth: 'permission denied',
  'host-key-changed': 'host key mismatch',
  'host-key-unknown': 'host key not known',
  lost: 'connection lost',
};
