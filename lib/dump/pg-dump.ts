// Runs `pg_dump` in the container into a file: never held in memory (peak RSS stays flat as the
// database grows), hashed and inspected as it lands. zx keeps every chunk of a command's
// output, so the dump goes through child_process.spawn, not `$`.
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { once } from 'node:events';
import { dirname } from 'node:path';
import { encryptStream } from '../age.ts';
import { DumpInspector, type DumpInspection } from './inspector.ts';
import { followFile } from '../host/follow-file.ts';
import { CliError } from '../errors.ts';
import { NotReadyError } from '../host/health.ts';
import { noTimeoutsPgOptions } from '../host/psql-session.ts';

/** How a dump is stored: plain SQL, gzipped SQL, or pg_dump's custom archive. */
export type BackupFormat = 'plain' | 'gzip' | 'custom';

export interface DumpRequest {
  docker: string;
  container: string;
  user: string;
  database: string;
  /**
   * Opens the dump: the exec starts at once and runs pg_isready and the side query, then waits
   * for this. It resolves, once the caller's checks have passed, with the snapshot pg_dump is
   * to import (exported by a session that stays open until the dump has started), or undefined;
   * a rejection kills the exec before pg_dump runs, and streamDump rejects with that error.
   */
  go: Promise<string | undefined>;
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
   * dump's own exec, right before pg_dump, instead of in an exec of its own beside it.
   */
  sideQuery?: string;
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

/** The exit status of the dump's exec when pg_isready failed (pg_dump exits 1, docker 125-127). */
const notReadyStatus = 96;
/** The exit status when the go line never came (the caller's checks failed, or it went away). */
const notOpenedStatus = 97;

/** How the side query's answer (or its error) comes back on the dump's stderr, one line each. */
const sideAnswer = 'planetarion-side-answer: ';
const sideError = 'planetarion-side-error: ';

/**
 * What runs in the container: pg_isready, then the side query by psql in the background (it runs
 * beside everything after it, pg_dump included, and is waited for at the end), then one line on
 * stdin (the snapshot to import, or empty) and pg_dump, in one `docker exec` (each exec costs
 * ~0.1 s of CPU in the daemon and runc, on a NAS pg_dump keeps busy). The exec starts while the
 * caller's checks and the snapshot's session are still under way, so its start and pg_isready
 * cost no time of their own; pg_dump waits for the line. The values reach sh as arguments or
 * data, never as script text.
 */
export function dumpCommand(request: Pick<DumpRequest, 'user' | 'database' | 'format' | 'sideQuery'>): string[] {
  const script = [
    // In the background, psql's lines must each be one write: pg_dump's messages go to the same stderr.
    'user=$1 database=$2 query=$3',
    'shift 3',
    `out=$(pg_isready -U "$user" -d "$database" </dev/null) || { printf 'pg_isready: %s\\n' "$out" >&2; exit ${notReadyStatus}; }`,
    `if [ -n "$query" ]; then { if out=$(psql -X -w -q -A -t -v ON_ERROR_STOP=1 -U "$user" -d "$database" -c "$query" 2>&1 </dev/null); then printf '${sideAnswer}%s\\n' "$out" >&2; else out=$(printf '%s' "$out" | tr '\\n' ' '); printf '${sideError}%s\\n' "$out" >&2; fi; } & fi`,
    `IFS= read -r snapshot || { wait; exit ${notOpenedStatus}; }`,
    'if [ -n "$snapshot" ]; then set -- "$@" "--snapshot=$snapshot"; fi',
    '"$@"',
    'status=$?',
    'wait',
    'exit $status',
  ].join('\n');
  return ['sh', '-c', script, 'sh', request.user, request.database, request.sideQuery ?? '', ...pgDumpArgs(request)];
}

/** The side query's answer out of the dump's stderr, and the stderr without it. Pure. */
export function splitSideAnswer(stderr: string): { side: DumpResult['side']; rest: string } {
  let side: DumpResult['side'];
  const rest = stderr
    .split('\n')
    .filter((line) => {
      if (line.startsWith(sideAnswer)) side = { answer: line.slice(sideAnswer.length) };
      else if (line.startsWith(sideError)) side = { error: line.slice(sideError.length).trim() };
      else return true;
      return false;
    })
    .join('\n');
  return { side, rest };
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

/** Runs pg_dump in the container and writes its output to request.path; throws a CliError on any failure. */
export async function streamDump(request: DumpRequest): Promise<DumpResult> {
  let started = Date.now();
  const fd = openSync(request.path, 'wx', 0o600);
  const hash = createHash('sha256');
  const inspector =
    request.format === 'custom'
      ? new ArchiveInspector(request.docker, request.container, request.sequences)
      : new DumpInspector(request.format === 'gzip', { sequences: request.sequences });
  const encrypted = Boolean(request.recipients?.length);
  // In clear, `docker exec` writes the file itself, exactly like the raw `docker exec … > file`,
  // and the bytes are hashed and inspected as they land (relaying them through a pipe of ours
  // made a scale-30 dump ~0.2 s slower than the raw pipeline, even with nothing else done).
  // Encrypted, the plaintext must never reach the disk: it comes through a pipe and the cipher.
  const child = spawn(
    request.docker,
    ['exec', '-i', '-e', `PGOPTIONS=${noTimeoutsPgOptions}`, request.container, ...dumpCommand(request)],
    { stdio: ['pipe', encrypted ? 'pipe' : fd, 'pipe'] },
  );
  // An exec that stopped before its line (pg_isready failed) reports that by its exit status.
  child.stdin!.on('error', () => {});
  let notOpened: { error: unknown } | undefined;
  request.go.then(
    (snapshot) => {
      started = Date.now();
      child.stdin!.end(`${snapshot ?? ''}\n`);
    },
    (error: unknown) => {
      notOpened = { error };
      child.kill('SIGKILL');
    },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    if (stderr.length < 64 * 1024) stderr += d;
  });
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
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
  const [code, signal] = await exited;
  if (notOpened) {
    await inspector.end().catch(() => {});
    throw notOpened.error;
  }
  const inspection = await inspector.end();
  const { side, rest } = splitSideAnswer(stderr);
  stderr = rest;
  if (code !== 0) {
    const probe = code === notReadyStatus ? /^pg_isready: (.*)$/m.exec(stderr) : null;
    if (probe) throw new NotReadyError(request.container, probe[1]!);
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
    durationMs: Date.now() - started,
    ...(side ? { side } : {}),
  };
}
