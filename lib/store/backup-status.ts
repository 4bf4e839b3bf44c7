// `backup-database --status`: the backups on disk, whether each still matches its checksum,
// and what the last run did.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { listBackups, orderWarnings, type BackupOrigin } from './backup-files.ts';
import { readChecksum, readManifest, sha256File } from './manifest.ts';
import { readStatus, type Status } from './status-file.ts';
import { formatAge, formatBytes } from '../format.ts';

export interface BackupOnDisk {
  file: string;
  /** The backup folder's number for it, by which backups are ordered; null for files from before it. */
  sequence: number | null;
  size: number;
  created: string;
  ageSeconds: number;
  /** ok: matches its .sha256; mismatch: it does not; missing: no .sha256 to check against. */
  checksum: 'ok' | 'mismatch' | 'missing';
  fingerprint: string | null;
  /** age-encrypted (`.age`); recipients as the manifest records them (empty if it has none). */
  encrypted: boolean;
  recipients: string[];
  lastDrill: { time: string; passed: boolean } | null;
  /** `old-script`: made by the old shell scripts; it carries no proof (restore it only with --no-verify). */
  origin: BackupOrigin;
  /** An old script backup's `-- GAME_STATE_HASH:` trailer (in practice `unavailable`); null otherwise. */
  gameStateHash: string | null;
}

/** The `-- GAME_STATE_HASH: <hash>` trailer the old script appended to its dumps, from the file's end. */
export function oldScriptHash(path: string): string | null {
  const fd = openSync(path, 'r');
  try {
    const size = statSync(path).size;
    const tail = Buffer.alloc(Math.min(size, 4096));
    readSync(fd, tail, 0, tail.length, size - tail.length);
    return /^-- GAME_STATE_HASH: *(\S+)/m.exec(tail.toString('utf8'))?.[1] ?? null;
  } finally {
    closeSync(fd);
  }
}

/** What an old script backup is and why it proves nothing (for --status and restore-database's refusal). */
export function oldScriptCaveat(gameStateHash: string | null): string {
  const hash =
    gameStateHash === null
      ? 'no game-state hash'
      : gameStateHash === 'unavailable'
        ? 'its game-state hash unavailable'
        : `game-state hash ${gameStateHash} (not checkable)`;
  return `old script backup: no checksum, no fingerprint, ${hash}; it carries no proof`;
}

/** Every backup in the dir, newest first, each checked against its checksum. */
export async function inspectBackups(backupDir: string, now = new Date()): Promise<BackupOnDisk[]> {
  const result: BackupOnDisk[] = [];
  for (const backup of listBackups(backupDir)) {
    const expected = readChecksum(backup.path);
    const manifest = readManifest(backup.path);
    result.push({
      file: backup.name,
      sequence: backup.sequence ?? null,
      size: statSync(backup.path).size,
      created: backup.created.toISOString(),
      ageSeconds: Math.round((now.getTime() - backup.created.getTime()) / 1000),
      checksum: expected === undefined ? 'missing' : (await sha256File(backup.path)) === expected ? 'ok' : 'mismatch',
      fingerprint: manifest?.fingerprint?.sha256 ?? null,
      encrypted: backup.encrypted,
      recipients: manifest?.encryption?.recipients ?? [],
      lastDrill: manifest?.lastDrill ? { time: manifest.lastDrill.time, passed: manifest.lastDrill.passed } : null,
      origin: backup.origin,
      gameStateHash: backup.origin === 'old-script' ? oldScriptHash(backup.path) : null,
    });
  }
  return result;
}

/** The human report of --status. */
export function renderBackupStatus(
  backups: BackupOnDisk[],
  status: Status,
  backupDir: string,
  warnings: string[] = [],
): string {
  const lines = [`Backups in ${backupDir} (newest first):`];
  if (backups.length === 0) lines.push('  none');
  for (const b of backups) {
    const check =
      b.origin === 'old-script'
        ? `${oldScriptCaveat(b.gameStateHash)}, restore it only with --no-verify`
        : { ok: 'checksum ok', mismatch: 'CHECKSUM MISMATCH', missing: 'no checksum file' }[b.checksum];
    const drill = b.lastDrill ? `, restore drill ${b.lastDrill.passed ? 'passed' : 'FAILED'} ${b.lastDrill.time}` : '';
    const encryption = b.encrypted
      ? `, encrypted (age${b.recipients.length ? `, ${b.recipients.length} recipient${b.recipients.length > 1 ? 's' : ''}` : ''})`
      : '';
    const age = b.ageSeconds < 0 ? 'IN THE FUTURE' : `${formatAge(b.ageSeconds)} old`;
    lines.push(`  ${b.file}  ${formatBytes(b.size).padStart(9)}  ${age.padStart(16)}  ${check}${encryption}${drill}`);
  }
  for (const warning of warnings) lines.push(`WARNING: ${warning}`);
  const rotation = status.rotation;
  if (rotation?.heldBecause.length) {
    lines.push(
      '',
      `Rotation held after ${rotation.file} (${rotation.time}): no backup was deleted, because`,
      ...rotation.heldBecause.map((r) => `  - ${r}`),
    );
  }
  const run = status.lastRun;
  lines.push(
    '',
    run ? `Last run: ${run.time} ${run.ok ? 'succeeded' : `FAILED: ${run.error}`}` : 'Last run: none recorded',
  );
  if (status.lastSuccess && !run?.ok)
    lines.push(`Last success: ${status.lastSuccess.time} (${status.lastSuccess.file})`);
  return `${lines.join('\n')}\n`;
}

/** Everything --status shows, as data: the backups, what the runs recorded, what is wrong with the order. */
export async function backupStatus(
  dir: string,
  backupDir: string,
  now = new Date(),
): Promise<{ backups: BackupOnDisk[]; status: Status; warnings: string[] }> {
  return {
    backups: await inspectBackups(backupDir, now),
    status: readStatus(dir),
    warnings: orderWarnings(listBackups(backupDir), now),
  };
}
