// Runs `pg_dump` in the container into a file: never held in memory (peak RSS stays flat as the
// database grows), hashed and inspected as it lands. zx keeps every chunk of a command's
// output, so the dump goes through child_process.spawn, not `$`.
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { once } from 'node:events';
import { dirname } from 'node:path';
import { encryptStream } from '../age.ts';
import { DumpInspector, type DumpInspection } from './inspector.ts';
import { followFile } from '../host/follow-file.ts';
import { CliError } from '../errors.ts';
import { NotReadyError } from '../host/health.ts';
import { noTimeoutsPgOptions, PsqlSession, psqlSessionArgs } from '../host/psql-session.ts';

/** How a dump is stored: plain SQL, gzipped SQL, or pg_dump's custom archive. */
export type BackupFormat = 'plain' | 'gzip' | 'custom';

export interface DumpRequest {
  docker: string;
  container: string;
  user: string;
  database: string;
  format: BackupFormat;
  /** Created here (O_EXCL, 0600); removed by the caller on failure. */
  path: string;
  /** Collect the dump's sequence values for a fingerprint (inspection.sequences); default true. */
  sequences?: boolean;
  /** age public keys: the bytes are encrypted before they reach the file (none are written in clear). */
  recipients?: string[];
  onProgress?: (bytes: number) => void;
  /**
   * Also gets pg_dump's output (the plaintext) as it streams, and holds the next chunk back
   * until it resolves: deploy restores the fresh dump into the new slot while it is written.
   * Must not throw (a failed consumer drops chunks and reports later).
   */
  tee?: (chunk: Buffer) => Promise<void>;
  /**
   * SQL whose one line of output comes back with the dump (result.side): run by psql in the
   * dump's own exec, beside pg_dump, instead of in an exec of its own.
   */
  sideQuery?: string;
  /**
   * Run a psql session in the dump's own exec (DumpExec.session), beside pg_dump: it exports the
   * snapshot pg_dump imports, and fingerprints it, without an exec of its own to start.
   */
  session?: boolean;
}

/**
 * The dump's exec, started at once: it runs the side query and the session, then waits until
 * the caller's checks have passed and it is opened (or cancelled, and pg_dump never runs).
 */
export interface DumpExec {
  /** Lets pg_dump run, importing `snapshot` (with a session, the one its session exported). */
  open(snapshot: string | undefined): void;
  /** Kills the exec before pg_dump runs: `done` rejects with `error`. */
  cancel(error: unknown): void;
  /** The psql session inside the exec (request.session); the exec ends once it is closed and pg_dump is done. */
  session: PsqlSession | undefined;
  done: Promise<DumpResult>;
}

export interface DumpResult {
  /** Bytes written to the file (the ciphertext when encrypted). */
  bytes: number;
  /** pg_dump's output bytes (the plaintext). */
  dumpBytes: number;
  /** Over the bytes written to the file, so checks and rotation work without the key. */
  sha256: string;
  inspection: DumpInspection;
  durationMs: number;
  /** The side query's one line of output, or psql's error; absent without a side query. */
  side?: { answer: string } | { error: string };
}

/**
 * pg_dump's gzip level. Level 1 measured 3.9x faster than streaming plain SQL out of
 * `docker exec` (the byte stream is the bottleneck) at a small cost in size.
 */
export const gzipLevel = 1;

/** The pg_dump argv run inside the container; the dump's script adds the snapshot it is given. */
export function pgDumpArgs(request: Pick<DumpRequest, 'user' | 'database' | 'format'>): string[] {
  return [
    'pg_dump',
    '--no-password',
    // A dump waiting forever behind an exclusive lock would block every later run.
    '--lock-wait-timeout=300s',
    '-U',
    request.user,
    '-d',
    request.database,
    ...(request.format === 'gzip'
      ? [`--compress=${gzipLevel}`]
      : request.format === 'custom'
        ? ['--format=custom']
        : []),
  ];
}

/**
 * How long the reader of the dump's file sleeps once it has caught up with docker: it then takes
 * ~2 MB at a time. Waking every 20 ms to take ~0.1 MB made a scale-40 backup 0.2 s slower (the
 * wakeups take the cores pg_dump and the server run on). The end is read at once, whatever this is.
 */
const followPollMs = 250;

/**
 * The exit status of the dump's exec when pg_dump failed and pg_isready then did too (pg_dump
 * exits 1, docker 125-127).
 */
const notReadyStatus = 96;
/** The exit status when the go line never came (the caller's checks failed, or it went away). */
const notOpenedStatus = 97;

/**
 * The lines the exec writes to its stderr beside pg_dump's messages, each after the exec's tag:
 * the side query's answer (or its error), what the session's psql writes to stdout and stderr,
 * its exit status and end, pg_dump's exit status, and pg_isready's answer after a failed pg_dump.
 * Each is one write of one line, so whole lines never mix; a tag is looked for anywhere in a line,
 * after a fragment of a pg_dump message written in pieces.
 */
const kinds = {
  sideAnswer: 'side-answer: ',
  sideError: 'side-error: ',
  psqlOut: 'psql-out: ',
  psqlErr: 'psql-err: ',
  psqlExit: 'psql-exit: ',
  psqlEnd: 'psql-end',
  dumpExit: 'dump-exit: ',
  notReady: 'not-ready: ',
} as const;

/**
 * A tag of the exec's own lines that nothing in the database can forge (a comment, a setting or
 * a table name that pg_dump quotes in a message): random for each exec.
 */
export function execTag(): string {
  return `planetarion-${randomBytes(8).toString('hex')}-`;
}

/** The psql variable naming where the session hands over its snapshot: fd 5, the pipe to pg_dump's side. */
const snapshotPipeVariable = 'planetarion_snapshot_pipe';

/**
 * The session's go: psql writes the snapshot's name into the script's pipe, and pg_dump starts.
 * The name comes from pg_export_snapshot(), and is checked before it becomes SQL text.
 */
export function snapshotHandoff(snapshot: string): string {
  if (!/^[0-9A-F]+(-[0-9A-F]+)+$/i.test(snapshot)) throw new CliError(`not a snapshot name: '${snapshot}'`);
  return `SELECT '${snapshot}' \\g :${snapshotPipeVariable}\n`;
}

/**
 * What runs in the container, in one `docker exec` (each exec costs ~0.1 s of CPU in the daemon
 * and runc, on a NAS pg_dump keeps busy): the side query by psql in the background (waited for
 * at the end); then pg_dump once the caller opens the dump; pg_isready only after a failed
 * pg_dump, to tell a server that does not accept connections apart. The exec starts while the
 * caller's checks are still under way, so its start costs no time of its own.
 * Without a session, the go is one line on stdin: the snapshot to import, or empty. With one,
 * psql reads stdin instead, its output framed on stderr, and the go is psql writing the snapshot
 * it exported into a pipe to pg_dump's side of the script (the pipe's end, once psql ended first
 * with every process that could write to it, means no dump); the exec ends once pg_dump is done
 * and the session closed. Nothing is written to the container's filesystem. The values reach sh
 * as arguments or data, never as script text.
 */
export function dumpCommand(
  request: Pick<DumpRequest, 'user' | 'database' | 'format' | 'sideQuery' | 'session'>,
  tag: string,
): string[] {
  const psql = psqlSessionArgs('"$user"', '"$database"', '"$field"').join(' ');
  const script = [
    // Every line of ours is one printf, one write: pg_dump's messages go to the same stderr.
    'user=$1 database=$2 query=$3 session=$4 tag=$5',
    'shift 5',
    `if [ -n "$query" ]; then { if out=$(psql -X -w -q -A -t -v ON_ERROR_STOP=1 -U "$user" -d "$database" -c "$query" 2>&1 </dev/null); then printf '%s${kinds.sideAnswer}%s\\n' "$tag" "$out" >&2; else out=$(printf '%s' "$out" | tr '\\n' ' '); printf '%s${kinds.sideError}%s\\n' "$tag" "$out" >&2; fi; } >&2 & fi`,
    `dump() { "$@" </dev/null; status=$?; printf '%s${kinds.dumpExit}%s\\n' "$tag" "$status" >&2; return $status; }`,
    'if [ -n "$session" ]; then',
    '  frame() { while IFS= read -r line || [ -n "$line" ]; do printf \'%s%s\\n\' "$1" "$line"; done; }',
    "  field=$(printf '\\037')",
    // Left, psql on the exec's stdin: its stdout and stderr framed apart, its status after its
    // messages, and fd 5 the pipe to the right, where the snapshot's line starts pg_dump
    // (and its end, once psql and its framers are gone, means no dump).
    `  { { { ${psql} -v "${snapshotPipeVariable}=/dev/fd/5" 2>&1 1>&6 6>&-; printf '%s${kinds.psqlExit}%s\\n' "$tag" "$?"; } | frame "\${tag}${kinds.psqlErr}" >&2; } 6>&1 | frame "\${tag}${kinds.psqlOut}" >&2; printf '%s${kinds.psqlEnd}\\n' "$tag" >&2; } 5>&1 1>&2 |`,
    `  { IFS= read -r snapshot; [ -n "$snapshot" ] || exit ${notOpenedStatus}; dump "$@" "--snapshot=$snapshot"; }`,
    '  status=$?',
    'else',
    `  IFS= read -r snapshot || { wait; exit ${notOpenedStatus}; }`,
    '  if [ -n "$snapshot" ]; then set -- "$@" "--snapshot=$snapshot"; fi',
    '  dump "$@"',
    '  status=$?',
    'fi',
    // pg_isready only to name why pg_dump failed: run first, it put ~35 ms on every dump's path.
    `if [ "$status" -ne 0 ] && [ "$status" -ne ${notOpenedStatus} ] && ! out=$(pg_isready -U "$user" -d "$database" </dev/null); then out=$(printf '%s' "$out" | tr '\\n' ' '); printf '%s${kinds.notReady}%s\\n' "$tag" "$out" >&2; status=${notReadyStatus}; fi`,
    'wait',
    'exit $status',
  ].join('\n');
  return [
    'sh',
    '-c',
    script,
    'sh',
    request.user,
    request.database,
    request.sideQuery ?? '',
    request.session ? '1' : '',
    tag,
    ...pgDumpArgs(request),
  ];
}

/**
 * A custom-format archive has no text to read: it is fed as it streams to `pg_restore -f -` in
 * the container, and the SQL that comes out is inspected like a plain dump. So the archive is
 * proven readable to its end, with the same trailer and sequence checks.
 */
export class ArchiveInspector {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly sql: DumpInspector;
  private readonly done: Promise<void>;
  private stderr = '';
  private exitCode: number | null = null;

  constructor(docker: string, container: string, sequences?: boolean) {
    this.sql = new DumpInspector(false, { sequences });
    const child = spawn(docker, ['exec', '-i', container, 'pg_restore', '-f', '-'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdin.on('error', () => {}); // its exit code says what went wrong
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (this.stderr.length < 16 * 1024) this.stderr += d;
    });
    const sql = this.sql;
    const reading = (async () => {
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) await sql.write(chunk);
    })();
    this.done = Promise.all([
      reading,
      once(child, 'close').then(([code]) => (this.exitCode = code as number | null)),
    ]).then(() => undefined);
  }

  /** Takes the next chunk of the archive (a copy: the caller may reuse its buffer). */
  async write(chunk: Buffer): Promise<void> {
    if (!this.child.stdin.write(Buffer.from(chunk))) await Promise.race([once(this.child.stdin, 'drain'), this.done]);
  }

  /** The findings; an archive pg_restore could not read counts as a broken stream. */
  async end(): Promise<DumpInspection> {
    this.child.stdin.end();
    await this.done;
    const inspection = await this.sql.end();
    return this.exitCode === 0
      ? inspection
      : {
          ...inspection,
          gzipIntact: false,
          gzipError: `pg_restore could not read the archive: ${this.stderr.trim() || `exit ${this.exitCode}`}`,
        };
  }
}

/** The CliError for a full filesystem (ENOSPC, or EDQUOT for a quota). */
function noSpaceError(path: string, bytes: number, code: string, cause?: unknown): CliError {
  return new CliError(`no space left on the filesystem of ${dirname(path)} after ${bytes} bytes (${code})`, {
    advice:
      'Free space there or point PLANETARION_BACKUP_DIR at a filesystem with room; the earlier backups were kept.',
    cause,
  });
}

/** Writes the whole chunk: the next one is read only once this one is on disk, so ENOSPC surfaces here. */
function writeAll(fd: number, chunk: Uint8Array): void {
  for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
}

const stopSignals = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * Kills `child` when this process is told to stop, then lets the signal do what it would have
 * done. A `docker exec` that writes the file itself does not notice its parent's death (a pipe
 * of ours would break) and would dump on to the end. Returns the function that uninstalls it.
 */
function killWithUs(child: ChildProcess): () => void {
  const handler = (signal: NodeJS.Signals) => {
    child.kill('SIGKILL');
    uninstall();
    // Nobody else listens: the default action (termination) is what the sender asked for.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  const uninstall = () => {
    for (const signal of stopSignals) process.off(signal, handler);
  };
  for (const signal of stopSignals) process.on(signal, handler);
  return uninstall;
}

/** Where the exec's own lines go: the session's psql, and pg_dump's exit status. */
export interface ExecLineTargets {
  session?: Pick<PsqlSession, 'output' | 'messages' | 'ended'>;
  onDumpExit(status: number): void;
}

/**
 * The exec's stderr, read as it comes: the exec's own lines (after its tag, see kinds) go where
 * they belong, the side query's answer is kept apart, and the rest (pg_dump's, psql's and docker's
 * messages) is kept, its first 64 KB, for the error message. Pure: it is fed the text.
 */
export class ExecStderr {
  /** The side query's one line of output, or psql's error; undefined until it came (or without one). */
  side: DumpResult['side'];
  /** What pg_isready said after pg_dump failed, when it failed too. */
  notReady: string | undefined;
  private readonly ownLine: RegExp;
  /** psql's exit status comes framed as one of its stderr lines, so after the tag twice. */
  private readonly psqlExitLine: string;
  private kept = '';
  private partial = '';
  private psqlExit: number | null = null;

  constructor(
    tag: string,
    private readonly to: ExecLineTargets,
  ) {
    const { psqlExit, ...framing } = kinds;
    this.ownLine = new RegExp(`${tag}(${Object.values(framing).join('|')})`);
    this.psqlExitLine = tag + psqlExit;
  }

  /** The next piece of stderr, in whatever pieces it arrives. */
  feed(text: string): void {
    this.partial += text;
    for (let end = this.partial.indexOf('\n'); end >= 0; end = this.partial.indexOf('\n')) {
      this.route(this.partial.slice(0, end + 1));
      this.partial = this.partial.slice(end + 1);
    }
  }

  /** What was not the exec's own lines, so far. */
  text(): string {
    return this.kept + this.partial;
  }

  private keep(text: string): void {
    if (this.kept.length < 64 * 1024) this.kept += text;
  }

  /** One whole line; the tag is looked for anywhere in it, after a fragment of a message written in pieces. */
  private route(line: string): void {
    const found = this.ownLine.exec(line);
    if (!found) {
      this.keep(line);
      return;
    }
    if (found.index > 0) this.keep(line.slice(0, found.index));
    const payload = line.slice(found.index + found[0].length);
    const { session, onDumpExit } = this.to;
    switch (found[1]) {
      case kinds.psqlOut:
        session?.output(payload);
        break;
      case kinds.psqlErr: {
        // After psql's last message, also one it was killed in the middle of (no newline).
        const exit = payload.indexOf(this.psqlExitLine);
        if (exit < 0) session?.messages(payload);
        else {
          if (exit > 0) session?.messages(`${payload.slice(0, exit)}\n`);
          this.psqlExit = Number(payload.slice(exit + this.psqlExitLine.length));
        }
        break;
      }
      case kinds.psqlEnd:
        session?.ended(this.psqlExit);
        break;
      case kinds.sideAnswer:
        this.side = { answer: payload.replace(/\n$/, '') };
        break;
      case kinds.sideError:
        this.side = { error: payload.trim() };
        break;
      case kinds.dumpExit:
        onDumpExit(Number(payload));
        break;
      case kinds.notReady:
        this.notReady = payload.trim();
        break;
    }
  }
}

/**
 * The session inside the exec: its psql reads the exec's stdin. Its transaction holds the
 * snapshot, so closing it is held back while pg_dump runs (a fingerprint finished first would
 * end it before pg_dump imported the snapshot); `release` lets it through once pg_dump is done.
 */
function sessionInExec(child: ChildProcess, pgDumpRunning: () => boolean) {
  let endLater: string | undefined;
  const session = PsqlSession.over({
    write: (text) => child.stdin!.write(text),
    end: (text) => {
      if (pgDumpRunning()) endLater = text;
      else child.stdin!.end(text);
    },
    kill: () => child.kill('SIGKILL'),
  });
  const release = () => {
    if (endLater !== undefined) child.stdin!.end(endLater);
  };
  return { session, release };
}

/**
 * Starts pg_dump's exec into request.path (see DumpExec); `done` rejects with a CliError on any
 * failure, or with the error given to cancel.
 */
export function execDump(request: DumpRequest): DumpExec {
  let fd: number;
  try {
    fd = openSync(request.path, 'wx', 0o600);
  } catch (error) {
    const done = Promise.reject(error);
    done.catch(() => {}); // the caller's to read
    return { open: () => {}, cancel: () => {}, session: undefined, done };
  }
  const encrypted = Boolean(request.recipients?.length);
  const tag = execTag();
  // In clear, `docker exec` writes the file itself, exactly like the raw `docker exec … > file`,
  // and the bytes are hashed and inspected as they land (relaying them through a pipe of ours
  // made a scale-30 dump ~0.2 s slower than the raw pipeline, even with nothing else done).
  // Encrypted, the plaintext must never reach the disk: it comes through a pipe and the cipher.
  const child = spawn(
    request.docker,
    ['exec', '-i', '-e', `PGOPTIONS=${noTimeoutsPgOptions}`, request.container, ...dumpCommand(request, tag)],
    { stdio: ['pipe', encrypted ? 'pipe' : fd, 'pipe'] },
  );
  // An exec that stopped before its go (docker could not start it) reports that by its exit status.
  child.stdin!.on('error', () => {});
  let gate: 'waiting' | 'open' | { cancelled: unknown } = 'waiting';
  const timing = {
    opened: Date.now(),
    dumped: undefined as number | undefined,
    status: undefined as number | undefined,
  };
  const inExec = request.session
    ? sessionInExec(child, () => gate === 'open' && timing.dumped === undefined)
    : undefined;
  const session = inExec?.session;
  const stderr = new ExecStderr(tag, {
    session,
    onDumpExit(status) {
      if (gate !== 'open') return;
      timing.dumped = Date.now();
      timing.status = status;
      inExec?.release();
      // A failed pg_dump fails the backup: its session's fingerprint is not waited for.
      if (status !== 0 && session) child.kill('SIGKILL');
    },
  });
  child.stderr!.setEncoding('utf8').on('data', (text: string) => stderr.feed(text));
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  const endSession = (code: number | null) => {
    // Why the exec ended (psql's or docker's error) is the session's error too.
    session?.messages(stderr.text());
    session?.ended(code);
  };
  exited.then(
    ([code]) => endSession(code),
    () => endSession(null),
  );
  const done = collectDump(request, { child, fd, encrypted, exited, stderr, timing, cancelled: () => gate });
  done.catch(() => {}); // the caller's to read
  return {
    session,
    done,
    open(snapshot) {
      if (gate !== 'waiting') return;
      let go: string;
      try {
        go = session ? snapshotHandoff(snapshot ?? '') : `${snapshot ?? ''}\n`;
      } catch (error) {
        this.cancel(error);
        return;
      }
      gate = 'open';
      timing.opened = Date.now();
      // Written at once: a session's next query must reach psql after the handoff, not before.
      if (session) child.stdin!.write(go);
      else child.stdin!.end(go);
    },
    cancel(error) {
      if (gate !== 'waiting') return;
      gate = { cancelled: error };
      child.kill('SIGKILL');
    },
  };
}

/** What collectDump needs of the exec execDump started. */
interface RunningExec {
  child: ChildProcess;
  fd: number;
  encrypted: boolean;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
  stderr: ExecStderr;
  timing: { opened: number; dumped: number | undefined; status: number | undefined };
  cancelled: () => 'waiting' | 'open' | { cancelled: unknown };
}

/** Follows the dump into its file (hashed and inspected as it lands) until the exec ends; throws a CliError on any failure. */
async function collectDump(request: DumpRequest, exec: RunningExec): Promise<DumpResult> {
  const { child, fd, encrypted, exited } = exec;
  const hash = createHash('sha256');
  const inspector =
    request.format === 'custom'
      ? new ArchiveInspector(request.docker, request.container, request.sequences)
      : new DumpInspector(request.format === 'gzip', { sequences: request.sequences });
  exited.catch(() => {}); // a spawn failure is read below
  // Encrypted, the pipe breaks when this process dies, and docker exec with it.
  if (!encrypted) exited.finally(killWithUs(child)).catch(() => {});
  let bytes = 0;
  let dumpBytes = 0;
  let lastProgress = 0;
  // Every byte of pg_dump's output (the plaintext), in order.
  const consume = async (chunk: Buffer, forTee = chunk): Promise<void> => {
    dumpBytes += chunk.length;
    await inspector.write(chunk);
    if (request.tee) await request.tee(forTee);
    if (request.onProgress && Date.now() - lastProgress > 1000) {
      lastProgress = Date.now();
      request.onProgress(dumpBytes);
    }
  };
  try {
    try {
      if (encrypted) {
        const plaintext = async function* (): AsyncGenerator<Uint8Array> {
          for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
            await consume(chunk);
            yield chunk;
          }
        };
        // The inspector sees the plaintext in memory on its way to the cipher; the file only
        // ever receives what comes out of it.
        for await (const chunk of encryptStream(plaintext(), request.recipients!)) {
          hash.update(chunk);
          writeAll(fd, chunk);
          bytes += chunk.length;
        }
      } else {
        for await (const chunk of followFile(request.path, exited, { pollMs: followPollMs })) {
          hash.update(chunk);
          bytes += chunk.length;
          // The chunk's buffer is reused for the next read: a tee that queues it gets a copy.
          await consume(chunk, request.tee ? Buffer.from(chunk) : chunk);
        }
      }
      fsyncSync(fd);
    } catch (error) {
      child.kill('SIGKILL');
      // A custom archive's pg_restore waits for the rest of its input: it must end too.
      await inspector.end().catch(() => {});
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') throw noSpaceError(request.path, bytes, code, error);
      throw new CliError(`writing the dump to ${request.path} failed: ${(error as Error).message}`, { cause: error });
    }
  } finally {
    closeSync(fd);
  }
  const [exitCode, signal] = await exited;
  // Killed because pg_dump failed (its session's fingerprint was not waited for): pg_dump's status.
  const code = exec.timing.status || exitCode;
  const gate = exec.cancelled();
  if (typeof gate === 'object') {
    await inspector.end().catch(() => {});
    throw gate.cancelled;
  }
  const inspection = await inspector.end();
  const stderr = exec.stderr.text();
  if (code !== 0) {
    // The server did not accept pg_dump's connection: pg_isready, run after it, says why. A dump
    // that had begun (the server stopped or crashed under it) keeps pg_dump's own error, and the
    // caller then looks for a container that stopped.
    const notReady = exec.stderr.notReady;
    if (exitCode === notReadyStatus && notReady !== undefined && dumpBytes === 0)
      throw new NotReadyError(request.container, notReady);
    // Docker's own write to the file failed: "write /dev/stdout: no space left on device".
    const full = /no space left on device|disk quota exceeded/i.exec(stderr);
    if (full) throw noSpaceError(request.path, bytes, /quota/i.test(full[0]) ? 'EDQUOT' : 'ENOSPC');
    throw new CliError(`pg_dump failed (exit ${code ?? signal}): ${stderr.trim() || 'no message'}`, {
      advice: `Check that container '${request.container}' is running and user '${request.user}' can read every table.`,
    });
  }
  request.onProgress?.(dumpBytes);
  return {
    bytes,
    dumpBytes,
    sha256: hash.digest('hex'),
    inspection,
    durationMs: (exec.timing.dumped ?? Date.now()) - exec.timing.opened,
    ...(exec.stderr.side ? { side: exec.stderr.side } : {}),
  };
}
