// The shared lock: one backup, restore or deploy at a time per base dir. A lock file linked into
// place whole holds the owner's pid and start time; a lock whose owner is gone (killed by cron's
// timeout, a power cut) is taken over, so the next scheduled run is never blocked by it.
import { readFileSync, statSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { placeNoReplace, tempPathFor, writeNewFile } from './atomic-file.ts';
import { CliError, ExitCode } from '../errors.ts';

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

/** What the lock file says: its owner, nothing (gone), or something no run would write whole. */
type LockReading =
  | { kind: 'owner'; owner: LockOwner; ageMs: number }
  | { kind: 'unreadable'; detail: string }
  | { kind: 'gone' };

function readLock(path: string): LockReading {
  let text: string;
  let ageMs: number;
  try {
    text = readFileSync(path, 'utf8');
    ageMs = Date.now() - statSync(path).mtimeMs;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'gone' };
    return { kind: 'unreadable', detail: (error as Error).message };
  }
  if (text.trim() === '') return { kind: 'unreadable', detail: 'it is empty' };
  try {
    const owner = JSON.parse(text) as LockOwner;
    if (Number.isSafeInteger(owner.pid) && typeof owner.host === 'string') return { kind: 'owner', owner, ageMs };
  } catch {
    // not JSON: reported below
  }
  return { kind: 'unreadable', detail: 'it does not hold an owner record' };
}

function readOwner(path: string): LockOwner | undefined {
  const reading = readLock(path);
  return reading.kind === 'owner' ? reading.owner : undefined;
}

/**
 * A lock younger than this is held whatever its pid says: a lock placed a moment ago (by a run
 * in another pid namespace, or while a takeover replaces it) is never taken over.
 */
export const freshLockMs = 10_000;

function createExclusive(path: string, content: string): boolean {
  try {
    writeNewFile(path, content);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  return true;
}

/** Places the owner record at `path` whole (a temp file linked into place): false when a lock is there. */
function placeLockFile(path: string, content: string): boolean {
  const temp = tempPathFor(path);
  writeNewFile(temp, content);
  try {
    return placeNoReplace(temp, path);
  } finally {
    safeUnlink(temp);
  }
}

/** Thrown when another run holds the lock, or its file is unreadable (exit 75). */
export class LockHeldError extends CliError {
  readonly owner: LockOwner | undefined;
  constructor(path: string, owner: LockOwner | undefined, detail?: string) {
    super(
      owner
        ? `another run holds the lock ${path}: ${owner.command} (pid ${owner.pid}, started ${owner.started})`
        : `the lock ${path} is held: ${detail ?? 'its owner is unknown'}`,
      {
        exitCode: ExitCode.locked,
        advice: owner
          ? `Wait for it to finish. If pid ${owner.pid} is not running, the lock is taken over automatically on the next run.`
          : `Runs write their lock whole, so this file was not left by a run that died. If no backup, restore or deploy is running, remove it: rm ${path}`,
      },
    );
    this.owner = owner;
  }
}

/**
 * Takes the lock in `dir` for `command`, or throws LockHeldError. The owner record is written
 * to a temp file and linked into place, so a lock file is never seen half-written: an empty or
 * unreadable one is not a run that died mid-write, and counts as held. A stale lock is taken
 * over under a short-lived takeover file, so two runs finding the same stale lock cannot both win.
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
  const content = `${JSON.stringify(owner)}\n`;
  let tookOverFrom: LockOwner | undefined;

  for (let attempt = 0; attempt < 5; attempt++) {
    if (placeLockFile(path, content)) return heldLock(path, owner, tookOverFrom);
    const reading = readLock(path);
    if (reading.kind === 'gone') continue;
    if (reading.kind === 'unreadable') throw new LockHeldError(path, undefined, reading.detail);
    const current = reading.owner;
    // A lock dated in the future (the clock was set back) is not fresh: its owner decides.
    if ((reading.ageMs >= 0 && reading.ageMs < freshLockMs) || ownerIsAlive(current))
      throw new LockHeldError(path, current);
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
  throw new LockHeldError(path, readOwner(path), 'it kept changing while this run tried to take it');
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
