// Streams `pg_dump` out of the container into a file: never held in memory (peak RSS stays
// flat as the database grows), hashed and inspected on the way. zx keeps every chunk of a
// command's output, so the dump goes through child_process.spawn, not `$`.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { once } from 'node:events';
import { DumpInspector, type DumpInspection } from './dump-inspector.ts';
import { CliError } from './errors.ts';

export interface DumpRequest {
  docker: string;
  container: string;
  user: string;
  database: string;
  /** A snapshot exported by a session that stays open until the dump has started. */
  snapshot: string | undefined;
  compress: boolean;
  /** Created here (O_EXCL, 0600); removed by the caller on failure. */
  path: string;
  onProgress?: (bytes: number) => void;
}

export interface DumpResult {
  bytes: number;
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
export function pgDumpArgs(request: Pick<DumpRequest, 'user' | 'database' | 'snapshot' | 'compress'>): string[] {
  return [
    'pg_dump',
    '--no-password',
    // A dump waiting forever behind an exclusive lock would block every later run.
    '--lock-wait-timeout=300s',
    '-U', request.user,
    '-d', request.database,
    ...(request.snapshot ? [`--snapshot=${request.snapshot}`] : []),
    ...(request.compress ? [`--compress=${gzipLevel}`] : []),
  ];
}

/** Runs pg_dump in the container and writes its output to request.path; throws a CliError on any failure. */
export async function streamDump(request: DumpRequest): Promise<DumpResult> {
  const started = Date.now();
  const fd = openSync(request.path, 'wx', 0o600);
  const hash = createHash('sha256');
  const inspector = new DumpInspector(request.compress);
  const child = spawn(request.docker, ['exec', request.container, ...pgDumpArgs(request)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    if (stderr.length < 64 * 1024) stderr += d;
  });
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  let bytes = 0;
  let lastProgress = 0;
  try {
    try {
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        hash.update(chunk);
        // Written synchronously: the next chunk is read only once this one is on disk, so
        // memory holds one chunk at a time, and ENOSPC surfaces right here.
        for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
        bytes += chunk.length;
        await inspector.write(chunk);
        if (request.onProgress && Date.now() - lastProgress > 1000) {
          lastProgress = Date.now();
          request.onProgress(bytes);
        }
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
  request.onProgress?.(bytes);
  return { bytes, sha256: hash.digest('hex'), inspection, durationMs: Date.now() - started };
}
