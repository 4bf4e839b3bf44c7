// Rotation: keep the newest N backups by the time in their names. Runs only after a new
// backup is verified and in place; never deletes the new file or anything outside the pattern.
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { listBackups, sidecarsOf, tempFileOwner, type BackupFile } from './backup-files.ts';
import { fsyncDir } from './atomic-file.ts';

/** The backups rotation removes: all but the newest `keep`, never `protect`. Pure. */
export function planRotation(backups: BackupFile[], keep: number, protect: string): BackupFile[] {
  const newestFirst = [...backups].sort((a, b) => b.time.getTime() - a.time.getTime() || (a.name < b.name ? 1 : -1));
  const kept = new Set(newestFirst.slice(0, keep).map((b) => b.name));
  kept.add(protect);
  return newestFirst.filter((b) => !kept.has(b.name));
}

/** Removes the planned backups with their sidecars; returns the names removed. */
export function rotateBackups(dir: string, keep: number, protect: string): string[] {
  const doomed = planRotation(listBackups(dir), keep, protect);
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
