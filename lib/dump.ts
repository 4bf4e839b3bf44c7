// Streams `pg_dump` out of the container into a file: never held in memory (peak RSS stays
// flat as the database grows), hashed and inspected on the way. zx keeps every chunk of a
// command's output, so the dump goes through child_process.spawn, not `$`.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { once } from 'node:events';
import { encryptStream } from './age.ts';
import { DumpInspector, type DumpInspection } from './dump-inspector.ts';
import { CliError } from './errors.ts';
import type { BackupFormat } from './backup-files.ts';

export interface DumpRequest {
  docker: string;
  container: string;
  user: string;
  database: string;
  /** A snapshot exported by a session that stays open until the dump has started. */
  snapshot: string | undefined;
  format: BackupFormat;
  /** Created here (O_EXCL, 0600); removed by the caller on failure. */
  path: string;
  /** age public keys: the bytes are encrypted before they reach the file (none are written in clear). */
  recipients?: string[];
  onProgress?: (bytes: number) => void;
  /**
   * Also gets pg_dump's output (the plaintext) as it streams, and holds the next chunk back
   * until it resolves: deploy restores the fresh dump into the new slot while it is written.
   * Must not throw (a failed consumer drops chunks and reports later).
   */
  tee?: (chunk: Buffer) => Promise<void>;
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
}

/**
 * pg_dump's gzip level. Level 1 measured 3.9x faster than streaming plain SQL out of
 * `docker exec` (the byte stream is the bottleneck) at a small cost in size.
 */
export const gzipLevel = 1;

/** The pg_dump argv run inside the container. */
export function pgDumpArgs(request: Pick<DumpRequest, 'user' | 'database' | 'snapshot' | 'format'>): string[] {
  return [
    'pg_dump',
    '--no-password',
    // A dump waiting forever behind an exclusive lock would block every later run.
    '--lock-wait-timeout=300s',
    '-U', request.user,
    '-d', request.database,
    ...(request.snapshot ? [`--snapshot=${request.snapshot}`] : []),
    ...(request.format === 'gzip' ? [`--compress=${gzipLevel}`] : request.format === 'custom' ? ['--format=custom'] : []),
  ];
}

/**
 * A custom-format archive has no text to read: it is fed as it streams to `pg_restore -f -` in
 * the container, and the SQL that comes out is inspected like a plain dump. So the archive is
 * proven readable to its end, with the same trailer and sequence checks.
 */
export class ArchiveInspector {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly sql = new DumpInspector(false);
  private readonly done: Promise<void>;
  private stderr = '';
  private exitCode: number | null = null;

  constructor(docker: string, container: string) {
    const child = spawn(docker, ['exec', '-i', container, 'pg_restore', '-f', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stdin.on('error', () => {}); // its exit code says what went wrong
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (this.stderr.length < 16 * 1024) this.stderr += d;
    });
    const sql = this.sql;
    const reading = (async () => {
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) await sql.write(chunk);
    })();
    this.done = Promise.all([reading, once(child, 'close').then(([code]) => (this.exitCode = code as number | null))]).then(() => undefined);
  }

  /** Takes the next chunk of the archive. */
  async write(chunk: Buffer): Promise<void> {
    if (!this.child.stdin.write(chunk)) await Promise.race([once(this.child.stdin, 'drain'), this.done]);
  }

  /** The findings; an archive pg_restore could not read counts as a broken stream. */
  async end(): Promise<DumpInspection> {
    this.child.stdin.end();
    await this.done;
    const inspection = await this.sql.end();
    return this.exitCode === 0 ? inspection : { ...inspection, gzipIntact: false, gzipError: `pg_restore could not read the archive: ${this.stderr.trim() || `exit ${this.exitCode}`}` };
  }
}

/** Runs pg_dump in the container and writes its output to request.path; throws a CliError on any failure. */
export async function streamDump(request: DumpRequest): Promise<DumpResult> {
  const started = Date.now();
  const fd = openSync(request.path, 'wx', 0o600);
  const hash = createHash('sha256');
  const inspector = request.format === 'custom' ? new ArchiveInspector(request.docker, request.container) : new DumpInspector(request.format === 'gzip');
  const child = spawn(request.docker, ['exec', request.container, ...pgDumpArgs(request)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    if (stderr.length < 64 * 1024) stderr += d;
  });
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  let bytes = 0;
  let dumpBytes = 0;
  let lastProgress = 0;
  // The inspector sees the plaintext in memory on its way to the cipher; the file only ever
  // receives what comes out of it.
  async function* inspected(): AsyncGenerator<Uint8Array> {
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
      dumpBytes += chunk.length;
      await inspector.write(chunk);
      if (request.tee) await request.tee(chunk);
      if (request.onProgress && Date.now() - lastProgress > 1000) {
        lastProgress = Date.now();
        request.onProgress(dumpBytes);
      }
      yield chunk;
    }
  }
  const output = request.recipients?.length ? encryptStream(inspected(), request.recipients) : inspected();
  try {
    try {
      for await (const chunk of output) {
        hash.update(chunk);
        // Written synchronously: the next chunk is read only once this one is on disk, so
        // memory holds one chunk at a time, and ENOSPC surfaces right here.
        for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
        bytes += chunk.length;
      }
      fsyncSync(fd);
    } catch (error) {
      child.kill('SIGKILL');
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        throw new CliError(`no space left on the filesystem of ${request.path.replace(/\/[^/]*$/, '')} after ${bytes} bytes (${code})`, {
          advice: 'Free space there or point PLANETARION_BACKUP_DIR at a filesystem with room; the earlier backups were kept.',
          cause: error,
        });
      }
      throw new CliError(`writing the dump to ${request.path} failed: ${(error as Error).message}`, { cause: error });
    }
  } finally {
    closeSync(fd);
  }
  const [code, signal] = await exited;
  const inspection = await inspector.end();
  if (code !== 0) {
    throw new CliError(`pg_dump failed (exit ${code ?? signal}): ${stderr.trim() || 'no message'}`, {
      advice: `Check that container '${request.container}' is running and user '${request.user}' can read every table.`,
    });
  }
  request.onProgress?.(dumpBytes);
  return { bytes, dumpBytes, sha256: hash.digest('hex'), inspection, durationMs: Date.now() - started };
}
