// Writes the machine's dirty page cache to disk at a moment when that costs the game nothing.
// Stopping a container syncs the filesystem Docker keeps its layers on (overlay's unmount), so
// the first container stopped after a large write pays for writing all of it back. In an online
// deployment that is the live app at the freeze, right after the new database's initial copy:
// its `docker stop` took 0.4 s after a scale-10 copy and 1.2 s after a scale-50 one, against
// 0.15 s with nothing dirty, all of it while the writers were down.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Logger } from '../log.ts';

/** The kernel's count of dirty page cache in bytes (/proc/meminfo), or undefined where it cannot be read. */
export function dirtyBytes(meminfo?: string): number | undefined {
  let text = meminfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/meminfo', 'utf8');
    } catch {
      return undefined;
    }
  }
  const kb = /^Dirty:\s+(\d+) kB$/m.exec(text)?.[1];
  return kb === undefined ? undefined : Number(kb) * 1024;
}

/**
 * Runs `sync` and waits for it at most timeoutMs: a sync stuck on a dead network mount cannot
 * be killed, and is then left to finish on its own, unreferenced so that this process can still
 * exit (the freeze pays the write-back, as before). A failed flush only costs time later, so it
 * never throws, except when `signal` aborts the deployment: that rejects at once, with the sync
 * left the same way, so a rollback never waits on a write-back. `env` is the environment sync is
 * looked up in (tests put a stand-in on its PATH).
 */
export async function flushWrites(
  log: Logger,
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {},
): Promise<void> {
  const { timeoutMs = 120_000, env = process.env, signal } = options;
  signal?.throwIfAborted();
  const started = Date.now();
  const dirty = dirtyBytes();
  const child = spawn('sync', [], { stdio: 'ignore', env });
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const outcome = await Promise.race([
    new Promise<string>((resolve) => {
      child.on('error', (error) => resolve(`failed: ${error.message}`));
      child.on('exit', (code, killed) => resolve(code === 0 ? 'done' : `failed (exit ${code ?? killed})`));
    }),
    new Promise<string>((resolve) => (timer = setTimeout(resolve, timeoutMs, 'timeout'))),
    new Promise<string>((resolve) => {
      onAbort = () => resolve('aborted');
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
  ]);
  clearTimeout(timer);
  if (onAbort) signal?.removeEventListener('abort', onAbort);
  if (outcome === 'timeout' || outcome === 'aborted') child.unref();
  if (outcome === 'aborted') signal?.throwIfAborted();
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (outcome === 'done')
    log.info(
      `Wrote the dirty page cache to disk before the freeze${dirty === undefined ? '' : ` (${Math.round(dirty / 1048576)} MB)`} in ${seconds} s, while the game runs`,
    );
  else
    log.warn(
      `sync ${outcome === 'timeout' ? `did not finish within ${seconds} s` : outcome}; the freeze may take longer (stopping a container writes the cache back)`,
    );
}
