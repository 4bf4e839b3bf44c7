// Fetching a backup from off-site: streamed to a private temp file, its sha256 checked against
// the .sha256 and the object's metadata before anyone may use it, then moved into place with
// its sidecars.
import { createHash } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  linkSync,
  mkdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fsyncDir } from '../host/atomic-file.ts';
import { sidecarsOf } from '../store/backup-files.ts';
import { CliError, UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { isEncrypted, missingIdentityReason } from '../store/check-file.ts';
import type { Settings } from '../settings.ts';
import { describeS3Error, OffsiteStore } from './client.ts';
import { offsiteConfig } from './config.ts';
import { inventory, isComplete } from './remote.ts';

/** sha256 of an object, streamed. */
export async function sha256OfObject(store: OffsiteStore, name: string): Promise<string> {
  const object = await store.get(name);
  if (!object) throw new CliError(`${name} is not in ${store.config.url}`);
  const hash = createHash('sha256');
  for await (const chunk of object.body) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The remote backup `latest` or NAME means: the newest complete copy, or that name (which must be complete). */
export async function resolveRemoteBackup(store: OffsiteStore, argument: string): Promise<string> {
  const { backups } = await inventory(store);
  if (argument === 'latest') {
    const newest = backups.find(isComplete);
    if (!newest)
      throw new CliError(`there is no complete backup in ${store.config.url}`, {
        advice: 'List the remote side with: backup-database --status --offsite',
      });
    return newest.name;
  }
  const found = backups.find((b) => b.name === argument);
  if (!found)
    throw new UsageError(
      `backup '${argument}' is not in ${store.config.url}`,
      'List the remote side with: backup-database --status --offsite',
    );
  if (!isComplete(found))
    throw new CliError(`the off-site copy of ${argument} is incomplete (a sidecar or the file is missing)`, {
      advice: 'Pick another with: backup-database --status --offsite',
    });
  return found.name;
}

/**
 * Downloads NAME with its sidecars into `dir` (which must not hold it yet), verified; returns its path.
 * The body goes to a temp file first: a broken download never appears under a backup's name.
 */
export async function downloadBackup(store: OffsiteStore, name: string, dir: string, log: Logger): Promise<string> {
  const [checksumText, manifestText] = await Promise.all([
    store.getText(`${name}.sha256`),
    store.getText(`${name}.json`),
  ]);
  const expected = /^([0-9a-f]{64})\s/.exec(checksumText ?? '')?.[1];
  if (!expected || manifestText === undefined)
    throw new CliError(`the off-site copy of ${name} lacks its ${expected ? 'manifest' : '.sha256'}`);
  const object = await store.get(name);
  if (!object) throw new CliError(`${name} vanished from ${store.config.url} while it was being fetched`);
  if (object.metadata.sha256 && object.metadata.sha256 !== expected)
    throw new CliError(
      `the off-site copy of ${name} has sha256 metadata ${object.metadata.sha256}, its .sha256 says ${expected}`,
    );
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, name);
  const temp = join(dir, `.${name}.download-${process.pid}`);
  const hash = createHash('sha256');
  let bytes = 0;
  log.info(`Downloading ${name} (${object.size} bytes) from ${store.config.url}`);
  try {
    await pipeline(
      object.body,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          bytes += chunk.length;
          yield chunk;
        }
      },
      createWriteStream(temp, { mode: 0o600, flags: 'wx' }),
    );
    const actual = hash.digest('hex');
    if (actual !== expected || (object.size >= 0 && bytes !== object.size)) {
      throw new CliError(
        `the off-site copy of ${name} does not match its checksum (sha256 ${actual}, ${bytes} bytes; expected ${expected}): not used`,
        {
          advice: 'Nothing was restored. Try an older off-site backup (backup-database --status --offsite).',
        },
      );
    }
    const sidecars = sidecarsOf(path);
    writeFileSync(sidecars.manifest, manifestText, { mode: 0o600, flag: 'wx' });
    writeFileSync(sidecars.checksum, checksumText!, { mode: 0o600, flag: 'wx' });
    linkSync(temp, path); // never over an existing backup
    fsyncDir(dir);
  } finally {
    try {
      unlinkSync(temp);
    } catch {
      // never created
    }
  }
  log.info(`Downloaded ${name}: sha256 ${expected} verified`);
  return path;
}

export interface FetchedBackup {
  /** The verified file the restore reads. */
  path: string;
  name: string;
  /** Removes the private download folder (not a backup adopted into the backup dir). */
  cleanup(): void;
}

/**
 * restore-database --from-offsite: downloads `latest` or NAME into a private 0700 folder inside the
 * backup dir (same filesystem: the NAS's /tmp is a small RAM disk), verified. With `adopt` (a real
 * restore) a backup the backup dir does not hold yet is moved there, so a new NAS starts with it.
 */
export async function fetchFromOffsite(options: {
  settings: Settings;
  log: Logger;
  argument: string;
  hasIdentity: boolean;
  adopt: boolean;
}): Promise<FetchedBackup> {
  const config = offsiteConfig(options.settings);
  if (!config)
    throw new UsageError(
      '--from-offsite: PLANETARION_OFFSITE is not set',
      'Set PLANETARION_OFFSITE=s3://BUCKET/PREFIX and the S3 settings (restore-database --help).',
    );
  const store = await OffsiteStore.open(config);
  const folder = join(options.settings.backupDir, `.offsite-download-${process.pid}`);
  const cleanup = () => rmSync(folder, { recursive: true, force: true });
  try {
    const name = await resolveRemoteBackup(store, options.argument);
    if (isEncrypted(name) && !options.hasIdentity)
      throw new UsageError(
        missingIdentityReason(name),
        'The identity (secret key) is the file age-keygen wrote; keep it off the NAS.',
      );
    mkdirSync(options.settings.backupDir, { recursive: true, mode: 0o700 });
    const path = await downloadBackup(store, name, folder, options.log);
    const local = join(options.settings.backupDir, name);
    if (options.adopt && !existsSync(local)) {
      for (const suffix of ['.json', '.sha256', '']) renameSync(path + suffix, local + suffix);
      fsyncDir(options.settings.backupDir);
      options.log.info(`${name} is now also a local backup in ${options.settings.backupDir}`);
      return { path: local, name, cleanup };
    }
    return { path, name, cleanup };
  } catch (error) {
    cleanup();
    if (error instanceof CliError) throw error;
    throw new CliError(`fetching the off-site backup failed: ${describeS3Error(error, config)}`, {
      advice: 'No database was touched.',
    });
  } finally {
    store.close();
  }
}
