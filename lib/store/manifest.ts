// The sidecars of a backup: `<file>.json` (what it is, how it was made, its fingerprint) and
// `<file>.sha256` (checkable with `sha256sum -c` from the backup dir).
import { createReadStream, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import type { WalPosition } from './backup-files.ts';
import type { DatabaseProperties } from '../dump/database-properties.ts';
import type { Fingerprint } from '../dump/fingerprint.ts';
import { sidecarsOf } from './backup-files.ts';
import { writeFileAtomic } from '../host/atomic-file.ts';
import type { BackupFormat } from '../dump/pg-dump.ts';

export interface RestoreDrill {
  time: string;
  durationMs: number;
  passed: boolean;
  detail: string;
}

export interface BackupManifest {
  manifestVersion: 1;
  file: string;
  created: string;
  /**
   * The backup folder's number for this backup (lib/store/backup-files.ts takeSequence): backups are
   * ordered by it, not by a clock. Absent in manifests written before it.
   */
  sequence?: number;
  /** The WAL position read in the snapshot's session, and its cluster: the cross-check of the order. */
  wal?: WalPosition;
  size: number;
  sha256: string;
  format: BackupFormat;
  compression: 'gzip' | 'none';
  /** Uncompressed SQL size. */
  sqlBytes: number;
  /**
   * Present when the file is encrypted with age: to which public keys, and pg_dump's output size
   * before encryption. `size` and `sha256` are the encrypted file's, so they check without the key.
   */
  encryption?: { scheme: 'age'; recipients: string[]; dumpBytes: number };
  postgres: { server: string; pgDump: string };
  database: string;
  /** The database's own settings (encoding, locale, owner, ACL, ...), which the dump leaves out; absent in older manifests. */
  databaseProperties?: DatabaseProperties;
  dbUser: string;
  container: string;
  image: string | undefined;
  imageId: string | undefined;
  /** null when the backup ran with --fingerprint off. */
  fingerprint: Fingerprint | null;
  durationsMs: { total: number; dump: number; fingerprint: number | null };
  toolVersion: string;
  /** The last restore drill of this file (restore-database --test). */
  lastDrill?: RestoreDrill;
}

/** The `sha256sum -c` line for a file: `<hex>  <name>`. */
export function checksumLine(sha256: string, path: string): string {
  return `${sha256}  ${basename(path)}\n`;
}

/** Writes both sidecars of a backup atomically. */
export function writeSidecars(path: string, manifest: BackupManifest): void {
  const { manifest: manifestPath, checksum } = sidecarsOf(path);
  writeFileAtomic(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
  writeFileAtomic(checksum, checksumLine(manifest.sha256, path));
}

/** The manifest of a backup, or undefined when it has none or it is unreadable. */
export function readManifest(path: string): BackupManifest | undefined {
  try {
    return JSON.parse(readFileSync(sidecarsOf(path).manifest, 'utf8')) as BackupManifest;
  } catch {
    return undefined;
  }
}

/** The sha256 recorded in `<file>.sha256`, or undefined. */
export function readChecksum(path: string): string | undefined {
  try {
    return /^([0-9a-f]{64})\s/.exec(readFileSync(sidecarsOf(path).checksum, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** sha256 of a file, streamed (what its .sha256 must say). */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
