// The remote side: which backups are under the prefix (by the local naming pattern; nothing else
// there is ever touched), which of them are complete copies, and off-site rotation.
import { parseBackupName } from '../store/backup-files.ts';
import type { Logger } from '../log.ts';
import { describeS3Error, isAccessDenied, type OffsiteStore, type RemoteObject } from './client.ts';

/** One backup as it is found off-site. */
export interface RemoteBackup {
  name: string;
  /** The time in the name; replaced by the manifest time (object metadata) where it was read. */
  time: Date;
  /** Size of the backup object; undefined when only sidecars are there. */
  size: number | undefined;
  hasManifest: boolean;
  hasChecksum: boolean;
  encrypted: boolean;
}

const sidecarSuffixes = ['.json', '.sha256'] as const;

/** The backup a key belongs to (itself or its sidecar's), or undefined for anything outside the pattern. */
export function backupNameOf(name: string): string | undefined {
  if (parseBackupName(name)) return name;
  for (const suffix of sidecarSuffixes) {
    if (name.endsWith(suffix) && parseBackupName(name.slice(0, -suffix.length))) return name.slice(0, -suffix.length);
  }
  return undefined;
}

/** Groups a listing into backups, newest first; objects outside the pattern are counted, not returned. */
export function remoteBackups(objects: RemoteObject[]): { backups: RemoteBackup[]; foreign: number } {
  const byName = new Map<string, RemoteBackup>();
  let foreign = 0;
  for (const object of objects) {
    const name = backupNameOf(object.name);
    if (!name) {
      foreign++;
      continue;
    }
    const parsed = parseBackupName(name)!;
    const entry = byName.get(name) ?? {
      name,
      time: parsed.time,
      size: undefined,
      hasManifest: false,
      hasChecksum: false,
      encrypted: parsed.encrypted,
    };
    if (object.name === name) entry.size = object.size;
    else if (object.name.endsWith('.json')) entry.hasManifest = true;
    else entry.hasChecksum = true;
    byName.set(name, entry);
  }
  return { backups: sortNewestFirst([...byName.values()]), foreign };
}

function sortNewestFirst(backups: RemoteBackup[]): RemoteBackup[] {
  return backups.sort((a, b) => b.time.getTime() - a.time.getTime() || (a.name < b.name ? 1 : -1));
}

/** Whether all three objects of a backup are there. */
export const isComplete = (b: RemoteBackup): boolean => b.size !== undefined && b.hasManifest && b.hasChecksum;

/** Lists the prefix and reads each backup's manifest time from its object metadata. */
export async function inventory(store: OffsiteStore): Promise<{ backups: RemoteBackup[]; foreign: number }> {
  const listed = remoteBackups(await store.list());
  for (const backup of listed.backups) {
    if (backup.size === undefined) continue;
    const created = (await store.head(backup.name))?.metadata.created;
    const time = created ? new Date(created) : undefined;
    if (time && !Number.isNaN(time.getTime())) backup.time = time;
  }
  return { backups: sortNewestFirst(listed.backups), foreign: listed.foreign };
}

/**
 * What off-site rotation removes: everything older than the newest `keep` complete copies
 * (incomplete leftovers included), never `protect`. Pure.
 */
export function planRemoteRotation(newestFirst: RemoteBackup[], keep: number, protect: string): RemoteBackup[] {
  let complete = 0;
  const doomed: RemoteBackup[] = [];
  for (const backup of newestFirst) {
    if (complete >= keep && backup.name !== protect) doomed.push(backup);
    else if (isComplete(backup)) complete++;
  }
  return doomed;
}

/** Removes the planned backups (backup object first, so a half-removed one is never complete); AccessDenied is a warning. */
export async function rotateRemote(
  store: OffsiteStore,
  newestFirst: RemoteBackup[],
  protect: string,
  log: Logger,
): Promise<{ removed: string[]; warning?: string }> {
  const removed: string[] = [];
  for (const backup of planRemoteRotation(newestFirst, store.config.keep, protect)) {
    try {
      for (const name of [backup.name, ...sidecarSuffixes.map((s) => backup.name + s)]) await store.delete(name);
    } catch (error) {
      if (!isAccessDenied(error)) throw error;
      const warning = `Off-site rotation skipped: the credentials may not delete in ${store.config.url} (${describeS3Error(error, store.config)}); fine with bucket versioning or object lock, where the bucket's lifecycle rules expire old copies`;
      log.warn(warning);
      return { removed, warning };
    }
    log.info(`Off-site rotation: removed ${backup.name} (keeping the newest ${store.config.keep})`);
    removed.push(backup.name);
  }
  return { removed };
}
