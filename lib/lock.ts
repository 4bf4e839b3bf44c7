// The shared lock: one backup, restore or deploy at a time per base dir. A lock file made with
// O_EXCL holds the owner's pid and start time; a lock whose owner is gone (killed by cron's
// timeout, a power cut) is taken over, so the next scheduled run is never blocked by it.
import { closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CliError, ExitCode } from './errors.ts';

export const lockFileName = '.planetarion.lock';

export interface LockOwner {
  pid: number;
  /** The owner's start time in clock ticks since boot (/proc/<pid>/stat), to tell a reused pid apart. */
  startTicks: string | undefined;
  command: string;
  host: string;
  started: string;
}

export interface HeldLock {
  path: string;
  owner: LockOwner;
  /** Whether a stale lock was taken over to get this one, and whose it was. */
  tookOverFrom: LockOwner | undefined;
  release(): void;
}

/** The start time of a process in ticks since boot, or undefined where /proc does not tell. */
export function processStartTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote this owner record still runs (same host, same pid, same start). */
export function ownerIsAlive(owner: LockOwner): boolean {
  if (owner.host !== hostname()) return true; // cannot tell for another machine: assume alive
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const ticks = processStartTicks(owner.pid);
  return owner.startTicks === undefined || ticks === undefined || ticks === owner.startTicks;
}

function readOwner(path: string): LockOwner | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

function createExclusive(path: string, content: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** Thrown when another live process holds the lock (exit 75). */
export class LockHeldError extends CliError {
  readonly owner: LockOwner;
  constructor(path: string, owner: LockOwner) {
    super(`another run holds the lock ${path}: ${owner.command} (pid ${owner.pid}, started ${owner.started})`, {
      exitCode: ExitCode.locked,
      advice: `Wait for it to finish. If pid ${owner.pid} is not running, the lock is taken over automatically on the next run.`,
    });
    this.owner = owner;
  }
}

/**
 * Takes the lock in `dir` for `command`, or throws LockHeldError. A stale lock is taken over
 * under a short-lived takeover file, so two runs finding the same stale lock cannot both win.
 */
export function acquireLock(dir: string, command: string): HeldLock {
  const path = join(dir, lockFileName);
  const owner: LockOwner = {
    pid: process.pid,
    startTicks: processStartTicks(process.pid),
    command,
    host: hostname(),
    started: new Date().toISOString(),
  };
  const content = JSON.stringify(owner) + '\n';
  let tookOverFrom: LockOwner | undefined;

  for (let attempt = 0; attempt < 5; attempt++) {
    if (createExclusive(path, content)) return heldLock(path, owner, tookOverFrom);
    const current = readOwner(path);
    if (current && ownerIsAlive(current)) throw new LockHeldError(path, current);
    // Stale (or unreadable, i.e. its writer died between create and write): take it over.
    const takeover = `${path}.takeover`;
    if (!createExclusive(takeover, content)) {
      // Someone else is taking it over right now; a takeover file left by a crash expires.
      if (Date.now() - safeMtime(takeover) > 30_000) safeUnlink(takeover);
      continue;
    }
    try {
      const again = readOwner(path);
      if (JSON.stringify(again) === JSON.stringify(current)) {
        safeUnlink(path);
        tookOverFrom = current;
      }
    } finally {
      safeUnlink(takeover);
    }
  }
  const current = readOwner(path);
  throw new LockHeldError(path, current ?? { pid: 0, startTicks: undefined, command: 'unknown', host: hostname(), started: 'unknown' });
}

function safeMtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return Date.now();
  }
}

function safeUnlink(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

function heldLock(path: string, owner: LockOwner, tookOverFrom: LockOwner | undefined): HeldLock {
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    // Remove it only while it is still ours: never someone else's lock.
    if (readOwner(path)?.pid === owner.pid) safeUnlink(path);
  };
  process.on('exit', release);
  return { path, owner, tookOverFrom, release };
}
