// Rotation: keep the newest N backups in the folder's order (lib/store/backup-files.ts: by sequence,
// never by a clock). Runs only after a new backup is verified and in place; never deletes the
// new file, the newest backup a restore drill proved, or anything outside the pattern; and
// deletes nothing when the new backup looks like data was lost.
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { listBackups, newestFirst, sidecarsOf, tempFileOwner, type BackupFile } from './backup-files.ts';
import { fsyncDir } from '../host/atomic-file.ts';
import type { Fingerprint } from '../dump/fingerprint.ts';
import { readManifest } from './manifest.ts';
import type { BackupFormat } from '../dump/pg-dump.ts';

/**
 * The backups rotation removes: all but the newest `keep`, never one named in `protect`. The old
 * scripts' backups count only once `keep` backups of this tool (each verified before it was put
 * in place) exist: until then none of them is removed, as they are all there is to fall back on. Pure.
 */
export function planRotation(
  backups: BackupFile[],
  keep: number,
  protect: string | Array<string | undefined>,
): BackupFile[] {
  const ordered = [...backups].sort(newestFirst);
  const verified = ordered.filter((b) => b.origin !== 'old-script').length;
  const oldKept = verified < keep ? ordered.filter((b) => b.origin === 'old-script').map((b) => b.name) : [];
  const kept = new Set<string | undefined>([
    ...ordered.slice(0, keep).map((b) => b.name),
    ...[protect].flat(),
    ...oldKept,
  ]);
  return ordered.filter((b) => !kept.has(b.name));
}

/** What the hold compares of a backup: its size and kind, and its fingerprint's row counts. */
export interface RotationFacts {
  name: string;
  size: number;
  format: BackupFormat;
  encrypted: boolean;
  fingerprint: Fingerprint | null | undefined;
}

/**
 * When a new backup holds rotation. A game database grows or churns by a few percent between
 * backups; gzip's ratio varies less than that. Half the size of the previous backup of the same
 * kind, or a table of some size losing more than half its rows, is far outside that and looks
 * like lost data (a bad migration, a truncate, a wrong database): the older backups are kept.
 * A smaller table may empty in normal play (sessions), so only one that had rows enough counts.
 */
export const holdRules = {
  /** The new file is smaller than this share of the previous one (same format and encryption). */
  sizeShare: 0.5,
  /** A table with at least this many rows ... */
  minRowsForDrop: 100,
  /** ... that keeps less than this share of them. */
  rowShare: 0.5,
  /** A table with at least this many rows that is now empty (or gone). */
  minRowsForEmptied: 10,
};

/** Why rotation should hold after `current`, compared with the backup before it; empty when it should not. Pure. */
export function rotationHoldReasons(
  current: RotationFacts,
  previous: RotationFacts | undefined,
  formatSize: (bytes: number) => string,
): string[] {
  if (!previous) return [];
  const reasons: string[] = [];
  if (
    previous.format === current.format &&
    previous.encrypted === current.encrypted &&
    previous.size > 0 &&
    current.size < previous.size * holdRules.sizeShare
  ) {
    reasons.push(
      `This backup (${formatSize(current.size)}) is less than half the size of the previous one, ${previous.name} (${formatSize(previous.size)})`,
    );
  }
  if (!current.fingerprint || !previous.fingerprint) return reasons;
  const now = new Map(current.fingerprint.tables.map((t) => [`${t.schema}.${t.table}`, t.rows]));
  const leftOut = new Set(current.fingerprint.excluded);
  for (const table of previous.fingerprint.tables) {
    const name = `${table.schema}.${table.table}`;
    if (leftOut.has(name)) continue;
    const rows = now.get(name) ?? 0;
    const dropped = table.rows >= holdRules.minRowsForDrop && rows < table.rows * holdRules.rowShare;
    const emptied = table.rows >= holdRules.minRowsForEmptied && rows === 0;
    if (dropped || emptied) {
      reasons.push(
        `table ${name} ${now.has(name) ? `has ${rows} rows` : 'is gone'}, ${table.rows} in the previous backup ${previous.name}`,
      );
    }
  }
  return reasons;
}

/** The newest backup (of a newest-first list) whose manifest records a passed restore drill. */
export function newestDrilled(newestFirstBackups: BackupFile[]): BackupFile | undefined {
  return newestFirstBackups.find((b) => readManifest(b.path)?.lastDrill?.passed === true);
}

/** Removes the planned backups with their sidecars; returns the names removed. */
export function rotateBackups(dir: string, keep: number, protect: Array<string | undefined>): string[] {
  const backups = listBackups(dir);
  const doomed = planRotation(backups, keep, [...protect, newestDrilled(backups)?.name]);
  for (const backup of doomed) {
    const { manifest, checksum } = sidecarsOf(backup.path);
    for (const path of [backup.path, manifest, checksum]) {
      try {
        unlinkSync(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
  }
  if (doomed.length) fsyncDir(dir);
  return doomed.map((b) => b.name);
}

/**
 * Removes temp files that crashed runs left behind. Called under the shared lock, so any temp
 * file not made by this process belongs to a run that is gone.
 */
export function removeLeftovers(dir: string, ownPid = process.pid): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(dir)) {
    const pid = tempFileOwner(name);
    if (pid === undefined || pid === ownPid) continue;
    unlinkSync(join(dir, name));
    removed.push(name);
  }
  return removed;
}
