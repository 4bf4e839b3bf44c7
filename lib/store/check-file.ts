// Checking a backup file before any database is touched: it exists, its format is known, its
// sha256 matches its sidecar, and its content is a complete dump (gzip intact, trailer present).
// One read of the file does all of it; an encrypted file is also decrypted to its end in that
// read (every age chunk authenticated), so a wrong key, a truncated or a tampered file is refused
// here, before any database is touched.
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { AgeError, ageSuffix, decryptStream } from '../age.ts';
import { DumpInspector, type DumpInspection } from '../dump/inspector.ts';
import { readChecksum, readManifest, sha256File, type BackupManifest } from './manifest.ts';

export type DumpFileFormat = 'plain' | 'gzip' | 'custom';

/** The format of a dump file by its name (under any `.age`); undefined when it is not one we can restore. */
export function dumpFormatOf(path: string): DumpFileFormat | undefined {
  if (isEncrypted(path)) path = path.slice(0, -ageSuffix.length);
  if (path.endsWith('.sql.gz')) return 'gzip';
  if (path.endsWith('.dump')) return 'custom';
  if (path.endsWith('.sql')) return 'plain';
  return undefined;
}

/** Whether a dump file is age-encrypted, by its name. */
export function isEncrypted(path: string): boolean {
  return path.endsWith(ageSuffix);
}

/** The message for an encrypted file and no identity: names the setting that is missing. */
export function missingIdentityReason(path: string): string {
  return `${basename(path)} is encrypted (age) and no identity was given: set PLANETARION_AGE_IDENTITY to the identity file, or pass --identity FILE`;
}

export interface CheckedBackup {
  path: string;
  format: DumpFileFormat;
  /** age-encrypted; it decrypted with the identities given. */
  encrypted: boolean;
  size: number;
  sha256: string;
  manifest: BackupManifest | undefined;
  /** What the content check found; undefined when the checksum proved the file (or for a custom archive). */
  inspection: DumpInspection | undefined;
}

/** Why a file cannot be restored, or undefined with the checked facts. */
export async function checkBackupFile(
  path: string,
  options: { requireManifest: boolean; identities?: string[] },
): Promise<{ ok: true; backup: CheckedBackup } | { ok: false; reason: string }> {
  if (!existsSync(path)) return { ok: false, reason: `${path} does not exist` };
  const format = dumpFormatOf(path);
  if (!format)
    return {
      ok: false,
      reason: `${basename(path)} is not a recognised backup format (.sql, .sql.gz or .dump, optionally .age)`,
    };
  const encrypted = isEncrypted(path);
  if (encrypted && !options.identities?.length) return { ok: false, reason: missingIdentityReason(path) };
  const manifest = readManifest(path);
  const expected = readChecksum(path) ?? manifest?.sha256;
  if (options.requireManifest && (!manifest || !expected)) {
    return {
      ok: false,
      reason: `${basename(path)} has no manifest (${basename(path)}.json) or checksum; its integrity and fingerprint cannot be checked (use --no-verify to restore it anyway)`,
    };
  }
  const hash = createHash('sha256');
  // With a checksum, the bytes are proven to be the ones verified (gzip, trailer) at backup time:
  // hashing alone suffices and costs a third of inflating. Without one, the content is inspected.
  const inspector = format === 'custom' || expected ? undefined : new DumpInspector(format === 'gzip');
  let head: Buffer | undefined;
  let decryptError: string | undefined;
  async function* hashed(): AsyncGenerator<Buffer> {
    for await (const chunk of createReadStream(path)) {
      hash.update(chunk as Buffer);
      yield chunk as Buffer;
    }
  }
  const source = hashed();
  try {
    const content = encrypted ? decryptStream(source, options.identities!) : source;
    for await (const chunk of content) {
      const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      if (!head || head.length < 5)
        head = Buffer.concat([head ?? Buffer.alloc(0), bytes.subarray(0, 5)]).subarray(0, 5);
      await inspector?.write(bytes);
    }
  } catch (error) {
    if (!(error instanceof AgeError)) throw error;
    decryptError = error.message;
  }
  // After a failed decryption the read stopped early; the whole file is hashed again, as a stale
  // checksum is the clearer reason when it applies.
  const sha256 = decryptError ? await sha256File(path) : hash.digest('hex');
  // A decryption that failed midway leaves the inspector with a partial dump: not worth reading.
  const inspection = decryptError ? undefined : await inspector?.end();
  if (expected && sha256 !== expected)
    return {
      ok: false,
      reason: `${basename(path)} does not match its checksum (expected ${expected}, got ${sha256}): the file is corrupt or truncated`,
    };
  if (manifest && manifest.sha256 !== sha256)
    return { ok: false, reason: `${basename(path)} does not match its manifest's sha256` };
  if (decryptError) return { ok: false, reason: `${basename(path)} cannot be decrypted: ${decryptError}` };
  if (format === 'custom') {
    // A custom archive is proven whole when it matches the checksum taken when pg_restore read it at backup time.
    if (head?.toString('latin1') !== 'PGDMP')
      return { ok: false, reason: `${basename(path)} is not a pg_dump custom-format archive` };
    return { ok: true, backup: { path, format, encrypted, size: statSync(path).size, sha256, manifest, inspection } };
  }
  if (!inspection)
    return { ok: true, backup: { path, format, encrypted, size: statSync(path).size, sha256, manifest, inspection } };
  if (!inspection.gzipIntact)
    return { ok: false, reason: `${basename(path)} is not a complete gzip stream (${inspection.gzipError})` };
  if (!inspection.complete)
    return { ok: false, reason: `${basename(path)} lacks pg_dump's completion trailer: the dump is truncated` };
  return { ok: true, backup: { path, format, encrypted, size: statSync(path).size, sha256, manifest, inspection } };
}
