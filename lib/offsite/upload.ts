// Uploading one backup with its sidecars, and proving the server holds what was sent: the size
// and the sha256 metadata it reports, and its ETag against the MD5s computed as the parts were
// read (or, where the server's ETag is not an MD5, by reading the object back).
import { createHash, type Hash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { sidecarsOf } from '../store/backup-files.ts';
import { CliError } from '../errors.ts';
import { readChecksum, readManifest } from '../store/manifest.ts';
import { partSize, type OffsiteStore, type RemoteHead } from './client.ts';
import { sha256OfObject } from './download.ts';

/**
 * Hashes the bytes as they are uploaded: sha256 of the whole (to prove the bytes read are the backup's) and
 * the MD5s the server's ETag can be checked against. A file of at most one part goes up in a
 * single PUT, whose ETag is its MD5: one MD5 pass. A larger one goes up in parts, whose ETag is
 * md5(part MD5s)-N on S3 and most providers, but the whole file's MD5 on some servers (s3rver
 * among them): both, as the alternative is reading the whole object back.
 */
export class UploadHasher {
  readonly sha256 = createHash('sha256');
  /** Only for a multipart upload: a single part's MD5 is the whole file's. */
  private readonly md5: Hash | undefined;
  private readonly partDigests: Buffer[] = [];
  private part: Hash = createHash('md5');
  private partBytes = 0;
  bytes = 0;

  constructor(
    size: number,
    private readonly partLength = partSize,
  ) {
    if (size > partLength) this.md5 = createHash('md5');
  }

  /** Takes the next bytes, in order; the chunks need not follow part boundaries. */
  update(chunk: Buffer): void {
    this.sha256.update(chunk);
    this.md5?.update(chunk);
    this.bytes += chunk.length;
    for (let offset = 0; offset < chunk.length; ) {
      const take = Math.min(this.partLength - this.partBytes, chunk.length - offset);
      this.part.update(take === chunk.length ? chunk : chunk.subarray(offset, offset + take));
      this.partBytes += take;
      offset += take;
      if (this.partBytes === this.partLength) this.endPart();
    }
  }

  private endPart(): void {
    this.partDigests.push(this.part.digest());
    this.part = createHash('md5');
    this.partBytes = 0;
  }

  /** The ETags an S3 server may report for these bytes (see the class comment). Call once, at the end. */
  expectedEtags(): string[] {
    if (this.partBytes > 0 || this.partDigests.length === 0) this.endPart();
    if (!this.md5) return this.partDigests.length === 1 ? [this.partDigests[0]!.toString('hex')] : [];
    const ofParts = createHash('md5');
    for (const digest of this.partDigests) ofParts.update(digest);
    return [`${ofParts.digest('hex')}-${this.partDigests.length}`, this.md5.digest('hex')];
  }
}

/** What a local backup needs off-site: its size, sha256 and manifest time. */
export interface LocalBackupFacts {
  name: string;
  path: string;
  size: number;
  sha256: string;
  created: string;
}

/** The facts of a local backup, or undefined when it has no .sha256 to copy it with. */
export function localFacts(path: string): LocalBackupFacts | undefined {
  const sha256 = readChecksum(path);
  if (!sha256) return undefined;
  const manifest = readManifest(path);
  return {
    name: basename(path),
    path,
    size: statSync(path).size,
    sha256,
    created: manifest?.created ?? statSync(path).mtime.toISOString(),
  };
}

/** Whether HeadObject shows the object as uploaded by uploadBackup: size and sha256 metadata. */
export function headMatches(head: RemoteHead | undefined, size: number, sha256: string): boolean {
  return head !== undefined && head.size === size && head.metadata.sha256 === sha256;
}

/**
 * Uploads a backup and its two sidecars (the manifest last), confirming each; throws a CliError on
 * any doubt. Says how the server's copy of the backup was proven: by its ETag or by reading it back.
 */
export async function uploadBackup(
  store: OffsiteStore,
  facts: LocalBackupFacts,
): Promise<{ confirmedBy: 'etag' | 'read-back' }> {
  const hasher = new UploadHasher(facts.size);
  await store.uploadFile(facts.name, {
    path: facts.path,
    size: facts.size,
    metadata: { sha256: facts.sha256, created: facts.created },
    onPart: (data) => hasher.update(data),
  });
  if (hasher.bytes !== facts.size || hasher.sha256.digest('hex') !== facts.sha256) {
    await store.delete(facts.name).catch(() => {});
    throw new CliError(
      `${facts.name} changed or does not match its .sha256 while it was uploaded; its off-site copy was removed`,
      {
        advice: 'Check the local file with: backup-database --status',
      },
    );
  }
  const head = await store.head(facts.name);
  if (!headMatches(head, facts.size, facts.sha256)) {
    throw new CliError(
      `the server does not confirm ${facts.name}: it reports ${head ? `${head.size} bytes, sha256 ${head.metadata.sha256 ?? 'none'}` : 'no object'}, expected ${facts.size} bytes, sha256 ${facts.sha256}`,
    );
  }
  let confirmedBy: 'etag' | 'read-back' = 'etag';
  if (!hasher.expectedEtags().includes(head!.etag)) {
    // Not an MD5 ETag (encryption at rest, some providers' multipart scheme): read it back instead.
    const actual = await sha256OfObject(store, facts.name);
    if (actual !== facts.sha256)
      throw new CliError(`the server holds other bytes for ${facts.name} than were sent (sha256 ${actual})`);
    confirmedBy = 'read-back';
  }
  const sidecars = sidecarsOf(facts.path);
  for (const sidecar of [sidecars.checksum, sidecars.manifest]) await uploadSmall(store, sidecar);
  return { confirmedBy };
}

/** Uploads a small file in one PUT and confirms its size and sha256. */
async function uploadSmall(store: OffsiteStore, path: string): Promise<void> {
  const data = readFileSync(path);
  const sha256 = createHash('sha256').update(data).digest('hex');
  await store.put(basename(path), data, { sha256 });
  if (!headMatches(await store.head(basename(path)), data.length, sha256))
    throw new CliError(`the server does not confirm ${basename(path)}`);
}
