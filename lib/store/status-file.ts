// `<dir>/status.json`: what the last runs did, for `--status` and for monitoring scripts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../host/atomic-file.ts';
import { statusFileName } from '../paths.ts';

/** The off-site part of status.json. */
export interface OffsiteRunRecord {
  time: string;
  ok: boolean;
  url: string;
  uploaded: string[];
  pending: string[];
  rotated: string[];
  warnings: string[];
  error?: string;
}

export interface RunStatus {
  time: string;
  durationMs: number;
  file?: string;
  size?: number;
  sha256?: string;
  fingerprint?: string | null;
  error?: string;
}

export interface Status {
  lastRun?: RunStatus & { ok: boolean };
  lastSuccess?: RunStatus;
  lastFailure?: RunStatus;
  /** The backups on disk after the last successful run, newest first. */
  backups?: Array<{ file: string; size: number }>;
  lastDrill?: { time: string; file: string; passed: boolean; durationMs: number; detail: string };
  /** The off-site phase of the backup runs (lib/offsite/copy.ts). */
  offsite?: { lastRun?: OffsiteRunRecord; lastSuccess?: OffsiteRunRecord; lastFailure?: OffsiteRunRecord };
  /** What rotation did after the last successful backup: what it removed, or why it deleted nothing. */
  rotation?: RotationStatus;
}

export interface RotationStatus {
  time: string;
  /** The new backup rotation ran after. */
  file: string;
  removed: string[];
  /** Why rotation was held (nothing removed); empty when it ran. */
  heldBecause: string[];
}

/** The status file's content; empty when there is none yet. */
export function readStatus(dir: string): Status {
  try {
    return JSON.parse(readFileSync(join(dir, statusFileName), 'utf8')) as Status;
  } catch {
    return {};
  }
}

/** Merges an update into status.json atomically. */
export function updateStatus(dir: string, update: (status: Status) => Status): Status {
  const next = update(readStatus(dir));
  writeFileAtomic(join(dir, statusFileName), `${JSON.stringify(next, null, 2)}\n`);
  return next;
}
