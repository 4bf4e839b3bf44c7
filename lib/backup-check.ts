// Checking a backup file before any database is touched: it exists, its format is known, its
// sha256 matches its sidecar, and its content is a complete dump (gzip intact, trailer present).
// One read of the file does all of it.
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { DumpInspector, type DumpInspection } from './dump-inspector.ts';
import { readChecksum, readManifest, type BackupManifest } from './manifest.ts';

export type DumpFileFormat = 'plain' | 'gzip' | 'custom';

/** The format of a dump file by its name; undefined when it is not one we can restore. */
export function dumpFormatOf(path: string): DumpFileFormat | undefined {
  if (path.endsWith('.sql.gz')) return 'gzip';
  if (path.endsWith('.dump')) return 'custom';
  if (path.endsWith('.sql')) return 'plain';
  return undefined;
}

export interface CheckedBackup {
  path: string;
  format: DumpFileFormat;
  size: number;
  sha256: string;
  manifest: BackupManifest | undefined;
  /** What the content check found; undefined when the checksum proved the file (or for a custom archive). */
  inspection: DumpInspection | undefined;
}

/** Why a file cannot be restored, or undefined with the checked facts. */
export async function checkBackupFile(path: string, options: { requireManifest: boolean }): Promise<{ ok: true; backup: CheckedBackup } | { ok: false; reason: string }> {
  if (!existsSync(path)) return { ok: false, reason: `${path} does not exist` };
  const format = dumpFormatOf(path);
  if (!format) return { ok: false, reason: `${basename(path)} is not a recognised backup format (.sql, .sql.gz or .dump)` };
  const manifest = readManifest(path);
  const expected = readChecksum(path) ?? manifest?.sha256;
  if (options.requireManifest && (!manifest || !expected)) {
    return { ok: false, reason: `${basename(path)} has no manifest (${basename(path)}.json) or checksum; its integrity and fingerprint cannot be checked (use --no-verify to restore it anyway)` };
  }
  const hash = createHash('sha256');
  // With a checksum, the bytes are proven to be the ones verified (gzip, trailer) at backup time:
  // hashing alone suffices and costs a third of inflating. Without one, the content is inspected.
  const inspector = format === 'custom' || expected ? undefined : new DumpInspector(format === 'gzip');
  let head: Buffer | undefined;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    head ??= (chunk as Buffer).subarray(0, 5);
    await inspector?.write(chunk as Buffer);
  }
  const sha256 = hash.digest('hex');
  const inspection = await inspector?.end();
  if (expected && sha256 !== expected) return { ok: false, reason: `${basename(path)} does not match its checksum (expected ${expected}, got ${sha256}): the file is corrupt or truncated` };
  if (manifest && manifest.sha256 !== sha256) return { ok: false, reason: `${basename(path)} does not match its manifest's sha256` };
  if (format === 'custom') {
    // A custom archive is proven whole when it matches the checksum taken when pg_restore read it at backup time.
    if (head?.toString('latin1') !== 'PGDMP') return { ok: false, reason: `${basename(path)} is not a pg_dump custom-format archive` };
    return { ok: true, backup: { path, format, size: statSync(path).size, sha256, manifest, inspection } };
  }
  if (!inspection) return { ok: true, backup: { path, format, size: statSync(path).size, sha256, manifest, inspection } };
  if (!inspection.gzipIntact) return { ok: false, reason: `${basename(path)} is not a complete gzip stream (${inspection.gzipError})` };
  if (!inspection.complete) return { ok: false, reason: `${basename(path)} lacks pg_dump's completion trailer: the dump is truncated` };
  return { ok: true, backup: { path, format, size: statSync(path).size, sha256, manifest, inspection } };
}
