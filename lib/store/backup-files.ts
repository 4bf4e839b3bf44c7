// The names of backup files and their sidecars, and the order of backups: the one place the
// naming pattern and the ordering are defined. Backups are ordered by a sequence number the
// backup folder keeps, never by a clock: the local time in a name repeats when DST falls back,
// and a clock (the kernel's too, so mtimes as well) can be set back or a file copied in.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ageSuffix } from '../age.ts';
import { writeFileAtomic } from '../host/atomic-file.ts';
import { UsageError } from '../errors.ts';
import type { BackupFormat } from '../dump/pg-dump.ts';

export const backupPrefix = 'planetarion_backup_';
/** Plain SQL (the old scripts' format), SQL compressed with gzip inside the container, pg_dump's custom format. */
export const extensionOf: Record<BackupFormat, string> = { plain: '.sql', gzip: '.sql.gz', custom: '.dump' };

// `.age` after any format: an encrypted backup belongs to the same rotation series as the others.
// The old shell script wrote plain SQL named with its game-state hash too: `..._HHMMSS_<hash>.sql`.
const namePattern =
  /^planetarion_backup_(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})(?:(\.sql|\.sql\.gz|\.dump)(\.age)?|_([A-Za-z0-9]{1,128})\.sql)$/;

/**
 * Who made a backup. `old-script`: the shell scripts this project replaces (plain SQL with no
 * manifest or checksum, or the `_<hash>.sql` form, whose hash is in practice `unavailable`):
 * such a backup carries no proof, so it restores only unproven (--no-verify), never as a deploy's
 * proof, and rotation keeps it until enough verified backups of this tool exist.
 */
export type BackupOrigin = 'tool' | 'old-script';

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
  /** The number the backup folder gave it (its own manifest's `sequence`); undefined without one. */
  sequence: number | undefined;
  /** Where the database's WAL stood at its snapshot, in which cluster (its manifest's `wal`). */
  wal: WalPosition | undefined;
  /** When it was made: its manifest's UTC time, else the time in its name. */
  created: Date;
  origin: BackupOrigin;
}

/** A WAL position (`pg_current_wal_lsn()`) and the cluster's system_identifier: positions compare only within one cluster. */
export interface WalPosition {
  lsn: string;
  systemIdentifier: string | null;
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
  const [, y, mo, d, h, mi, s, ext, age, oldHash] = m;
  const time = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  if (Number.isNaN(time.getTime()) || backupStamp(time) !== `${y}${mo}${d}_${h}${mi}${s}`) return undefined;
  const format = (Object.keys(extensionOf) as BackupFormat[]).find((f) => extensionOf[f] === (ext ?? '.sql'))!;
  const origin: BackupOrigin = oldHash === undefined ? 'tool' : 'old-script';
  return {
    name,
    path: join(dir, name),
    stamp: `${y}${mo}${d}_${h}${mi}${s}`,
    time,
    format,
    encrypted: age !== undefined,
    sequence: undefined,
    wal: undefined,
    created: time,
    origin,
  };
}

/** Whether a backup on disk is the old script's: named so, or plain SQL with neither manifest nor checksum beside it. */
function isOldScriptBackup(b: BackupFile): boolean {
  if (b.origin === 'old-script') return true;
  const { manifest, checksum } = sidecarsOf(b.path);
  return b.format === 'plain' && !b.encrypted && !existsSync(manifest) && !existsSync(checksum);
}

/** The backups a restore can prove (made by this tool): what a deploy may restore. */
export function provableBackups(backups: BackupFile[]): BackupFile[] {
  return backups.filter((b) => b.origin !== 'old-script');
}

/** The manifest and checksum files that belong to a backup. */
export function sidecarsOf(path: string): { manifest: string; checksum: string } {
  return { manifest: `${path}.json`, checksum: `${path}.sha256` };
}

/** The hidden temp file a run streams into before the rename; its pid names the run. */
export function tempFileName(finalName: string, pid = process.pid): string {
  return `.${finalName}.tmp-${pid}`;
}

const tempPattern =
  /^\.planetarion_backup_\d{8}_\d{6}\.(sql|sql\.gz|dump)(\.age)?(\.json|\.sha256)?\.tmp-(\d+)(-[0-9a-f]+)?$/;

/** The pid in a temp file's name, for files a crashed run left behind; undefined if not ours. */
export function tempFileOwner(name: string): number | undefined {
  const m = tempPattern.exec(name);
  if (m) return Number(m[4]);
  const counter = sequenceTempPattern.exec(name);
  return counter ? Number(counter[1]) : undefined;
}

/** The leftovers of the sequence file's atomic writes (writeFileAtomic's temp names). */
const sequenceTempPattern = /^\.planetarion_sequence\.tmp-(\d+)-[0-9a-f]+$/;

/**
 * The ordering facts a backup's manifest records, read only from its own manifest (its `file`
 * names it): a manifest copied in beside another file does not lend that file its number.
 */
export function recordedOrder(
  path: string,
): { sequence: number | undefined; wal: WalPosition | undefined; created: Date | undefined } | undefined {
  let manifest: { file?: unknown; sequence?: unknown; wal?: WalPosition; created?: unknown };
  try {
    manifest = JSON.parse(readFileSync(sidecarsOf(path).manifest, 'utf8')) as typeof manifest;
  } catch {
    return undefined;
  }
  if (manifest === null || typeof manifest !== 'object' || manifest.file !== basename(path)) return undefined;
  const sequence =
    Number.isSafeInteger(manifest.sequence) && (manifest.sequence as number) > 0
      ? (manifest.sequence as number)
      : undefined;
  const created = typeof manifest.created === 'string' ? new Date(manifest.created) : undefined;
  const wal =
    typeof manifest.wal?.lsn === 'string' && lsnValue(manifest.wal.lsn) !== undefined ? manifest.wal : undefined;
  return { sequence, wal, created: created && !Number.isNaN(created.getTime()) ? created : undefined };
}

/**
 * Newest first: numbered backups by their sequence, then (as older) those without one by the
 * time in their names; the name breaks ties. Pure.
 */
export function newestFirst(a: BackupFile, b: BackupFile): number {
  const byName = a.name < b.name ? 1 : a.name > b.name ? -1 : 0;
  if (a.sequence !== undefined && b.sequence !== undefined) return b.sequence - a.sequence || byName;
  if (a.sequence !== undefined || b.sequence !== undefined) return a.sequence !== undefined ? -1 : 1;
  return b.time.getTime() - a.time.getTime() || byName;
}

/** An LSN `X/Y` (hex) as a number, or undefined for anything else. */
export function lsnValue(lsn: string): bigint | undefined {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn);
  return m ? (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`) : undefined;
}

/** How far in the future a backup's date may be before it is reported (clocks a little apart). */
export const futureToleranceMs = 5 * 60_000;

/**
 * What a folder's order says is wrong, for the log and --status: a backup dated in the future
 * (the clock was set back, or it was copied in), and a newer backup of a cluster whose WAL
 * position is behind an older one's (the folder's counter was lost, or files were mixed). Pure.
 */
export function orderWarnings(newestFirstBackups: BackupFile[], now: Date): string[] {
  const warnings: string[] = [];
  for (const b of newestFirstBackups) {
    if (b.created.getTime() > now.getTime() + futureToleranceMs) {
      warnings.push(
        `${b.name} is dated in the future (${b.created.toISOString()}; now ${now.toISOString()}): the clock was set back, or the file was copied in. Backups are ordered by their sequence numbers, not by date.`,
      );
    }
  }
  const newerOfCluster = new Map<string, BackupFile>();
  for (const b of newestFirstBackups) {
    if (b.sequence === undefined || !b.wal?.systemIdentifier) continue;
    const newer = newerOfCluster.get(b.wal.systemIdentifier);
    if (newer && lsnValue(newer.wal!.lsn)! < lsnValue(b.wal.lsn)!) {
      warnings.push(
        `${newer.name} (sequence ${newer.sequence}) was taken at WAL ${newer.wal!.lsn}, before ${b.name} (sequence ${b.sequence}) at ${b.wal.lsn} in the same cluster: check the order of these backups.`,
      );
    }
    newerOfCluster.set(b.wal.systemIdentifier, b);
  }
  return warnings;
}

/** The file in the backup dir that holds the last sequence number given. */
export const sequenceFileName = '.planetarion_sequence';

/**
 * Gives the next backup its number (call under the lock): one more than the folder's counter and
 * than any manifest's, stored before it is used, so no number is given twice even if the run dies.
 */
export function takeSequence(dir: string, backups: BackupFile[] = listBackups(dir)): number {
  let stored = 0;
  try {
    stored = Number(/^\s*(\d+)\s*$/.exec(readFileSync(join(dir, sequenceFileName), 'utf8'))?.[1] ?? 0);
  } catch {
    // no counter yet (or unreadable): the manifests' numbers still count
  }
  const next = Math.max(stored, ...backups.map((b) => b.sequence ?? 0)) + 1;
  writeFileAtomic(join(dir, sequenceFileName), `${next}\n`);
  return next;
}

/** Every backup in a dir, newest first (see newestFirst). */
export function listBackups(dir: string): BackupFile[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR')
      throw new UsageError(
        `the backup folder '${dir}' is not a directory`,
        'Set PLANETARION_BACKUP_DIR (or --backup-dir) to a folder.',
      );
    throw error;
  }
  return names
    .map((name) => parseBackupName(name, dir))
    .filter((f): f is BackupFile => f !== undefined)
    .map((f) => {
      const order = recordedOrder(f.path);
      const known = order ? { ...f, ...order, created: order.created ?? f.time } : f;
      return isOldScriptBackup(known) ? { ...known, origin: 'old-script' as const } : known;
    })
    .sort(newestFirst);
}
