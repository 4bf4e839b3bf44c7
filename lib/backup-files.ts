// The names of backup files and their sidecars: the one place the naming pattern is defined.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ageSuffix } from './age.ts';

export const backupPrefix = 'planetarion_backup_';
/** Plain SQL (the seed's format), SQL compressed with gzip inside the container, pg_dump's custom format. */
export type BackupFormat = 'plain' | 'gzip' | 'custom';
export const extensionOf: Record<BackupFormat, string> = { plain: '.sql', gzip: '.sql.gz', custom: '.dump' };

// `.age` after any format: an encrypted backup belongs to the same rotation series as the others.
const namePattern = /^planetarion_backup_(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})(\.sql|\.sql\.gz|\.dump)(\.age)?$/;

export interface BackupFile {
  name: string;
  path: string;
  /** YYYYMMDD_HHMMSS from the name. */
  stamp: string;
  /** The time in the name, read as local time (the NAS's clock, like `date`). */
  time: Date;
  format: BackupFormat;
  /** Encrypted with age (`.age`): restoring it needs an identity. */
  encrypted: boolean;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** `YYYYMMDD_HHMMSS` of a local time, as the shell script's `date +%Y%m%d_%H%M%S`. */
export function backupStamp(date: Date): string {
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}_${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
}

/** The stamp `seconds` after another (the same local-time reading backupStamp writes). */
export function stampAfter(stamp: string, seconds: number): string {
  const m = /^(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})$/.exec(stamp);
  if (!m) throw new Error(`not a stamp: ${stamp}`);
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  return backupStamp(new Date(y!, mo! - 1, d!, h!, mi!, s! + seconds));
}

/** The file name of a backup taken at `date` in `format`, `.age` appended when encrypted. */
export function backupFileName(date: Date, format: BackupFormat, encrypted = false): string {
  return `${backupPrefix}${backupStamp(date)}${extensionOf[format]}${encrypted ? ageSuffix : ''}`;
}

/** Parses a backup file name; undefined for anything that is not exactly one (never touched). */
export function parseBackupName(name: string, dir = ''): BackupFile | undefined {
  const m = namePattern.exec(name);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, ext, age] = m;
  const time = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  if (Number.isNaN(time.getTime()) || backupStamp(time) !== `${y}${mo}${d}_${h}${mi}${s}`) return undefined;
  const format = (Object.keys(extensionOf) as BackupFormat[]).find((f) => extensionOf[f] === ext)!;
  return { name, path: join(dir, name), stamp: `${y}${mo}${d}_${h}${mi}${s}`, time, format, encrypted: age !== undefined };
}

/** The manifest and checksum files that belong to a backup. */
export function sidecarsOf(path: string): { manifest: string; checksum: string } {
  return { manifest: `${path}.json`, checksum: `${path}.sha256` };
}

/** The hidden temp file a run streams into before the rename; its pid names the run. */
export function tempFileName(finalName: string, pid = process.pid): string {
  return `.${finalName}.tmp-${pid}`;
}

const tempPattern = /^\.planetarion_backup_\d{8}_\d{6}\.(sql|sql\.gz|dump)(\.age)?(\.json|\.sha256)?\.tmp-(\d+)(-[0-9a-f]+)?$/;

/** The pid in a temp file's name, for files a crashed run left behind; undefined if not ours. */
export function tempFileOwner(name: string): number | undefined {
  const m = tempPattern.exec(name);
  return m ? Number(m[4]) : undefined;
}

/** Every backup in a dir, newest first (by the time in the name; the name breaks ties). */
export function listBackups(dir: string): BackupFile[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return names
    .map((name) => parseBackupName(name, dir))
    .filter((f): f is BackupFile => f !== undefined)
    .sort((a, b) => b.time.getTime() - a.time.getTime() || (a.name < b.name ? 1 : -1));
}
