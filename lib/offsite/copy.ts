// The off-site phase of a backup run: after the new backup is verified, placed and rotated
// locally, copy every local backup that is not yet confirmed off-site (the new one first, so
// an outage loses no copy), then rotate the remote side. It never throws: the local backup
// counts whatever happens here; a failure is logged, recorded in status.json and returned.
import { listBackups } from '../store/backup-files.ts';
import { CliError, errorText, UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Settings } from '../settings.ts';
import { type OffsiteRunRecord, updateStatus } from '../store/status-file.ts';
import { describeS3Error, OffsiteStore } from './client.ts';
import { credentialsFileWarning, offsiteConfig, type OffsiteConfig } from './config.ts';
import { inventory, isComplete, rotateRemote } from './remote.ts';
import { headMatches, localFacts, uploadBackup, type LocalBackupFacts } from './upload.ts';

/** What the off-site phase did; `ok: false` makes the run exit 1 although the local backup is good. */
export interface OffsiteOutcome {
  url: string;
  ok: boolean;
  uploaded: string[];
  /** Local backups already confirmed off-site. */
  present: string[];
  /** Local backups still not off-site (the next run uploads them). */
  pending: string[];
  rotated: string[];
  warnings: string[];
  error?: string;
}

export interface OffsiteContext {
  settings: Settings;
  log: Logger;
  /** The backup this run made: uploaded first, and never removed by off-site rotation. */
  newFile: string;
  now?: () => Date;
}

/** Runs the off-site phase when PLANETARION_OFFSITE is set; undefined when it is not. */
export async function copyOffsite(context: OffsiteContext): Promise<OffsiteOutcome | undefined> {
  const config = offsiteConfig(context.settings);
  if (!config) return undefined;
  const { log } = context;
  const started = (context.now ?? (() => new Date()))();
  const outcome: OffsiteOutcome = {
    url: config.url,
    ok: false,
    uploaded: [],
    present: [],
    pending: [],
    rotated: [],
    warnings: [],
  };
  // Only the backups off-site rotation keeps: an older local one would be uploaded and removed again.
  const locals = listBackups(context.settings.backupDir)
    .slice(0, config.keep)
    .map((b) => b.path);
  outcome.pending = locals.map((p) => p.split('/').pop()!);
  let store: OffsiteStore | undefined;
  try {
    store = await OffsiteStore.open(config);
    const fileWarning = credentialsFileWarning(store.credentials);
    if (fileWarning) warn(outcome, log, fileWarning);
    if (!context.newFile.endsWith('.age')) {
      warn(
        outcome,
        log,
        `The off-site copy of ${context.newFile} is not encrypted: ${config.url} can read it (set PLANETARION_AGE_RECIPIENTS to encrypt backups)`,
      );
    }
    await copyMissing(store, config, locals, outcome, log);
    const after = await inventory(store);
    const rotation = await rotateRemote(store, after.backups, context.newFile, log);
    outcome.rotated = rotation.removed;
    if (rotation.warning) outcome.warnings.push(rotation.warning);
    outcome.ok = true;
    log.info(
      `Off-site copy in ${config.url} confirmed: ${outcome.uploaded.length} uploaded, ${outcome.present.length} already there, ${after.backups.filter(isComplete).length - outcome.rotated.length} kept off-site`,
    );
  } catch (error) {
    outcome.error = error instanceof UsageError || !store ? errorText(error) : describeS3Error(error, config);
    log.error(
      `Off-site copy to ${config.url} failed: ${outcome.error}. The local backup ${context.newFile} is good; the next run uploads what is missing.`,
    );
  } finally {
    store?.close();
  }
  recordOutcome(context.settings.dir, started, outcome, log);
  return outcome;
}

function warn(outcome: OffsiteOutcome, log: Logger, message: string): void {
  log.warn(message);
  outcome.warnings.push(message);
}

/** Uploads every local backup (newest first) whose off-site copy is missing, incomplete or different. */
async function copyMissing(
  store: OffsiteStore,
  config: OffsiteConfig,
  locals: string[],
  outcome: OffsiteOutcome,
  log: Logger,
): Promise<void> {
  const listed = new Set((await store.list()).map((o) => o.name));
  for (const path of locals) {
    const facts = localFacts(path);
    const name = path.split('/').pop()!;
    if (!facts) {
      warn(outcome, log, `${name} has no .sha256: not copied off-site`);
      continue;
    }
    if (await confirmedOffsite(store, facts, listed)) {
      outcome.present.push(name);
    } else {
      const started = Date.now();
      log.info(`Uploading ${name} (${facts.size} bytes) to ${config.url}`);
      await uploadBackup(store, facts);
      log.info(
        `Off-site copy of ${name} confirmed (size, sha256, server checksum) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
      outcome.uploaded.push(name);
    }
    outcome.pending = outcome.pending.filter((n) => n !== name);
  }
}

/** Whether the backup and both sidecars are off-site and the server reports the backup's size and sha256. */
async function confirmedOffsite(store: OffsiteStore, facts: LocalBackupFacts, listed: Set<string>): Promise<boolean> {
  if (![facts.name, `${facts.name}.json`, `${facts.name}.sha256`].every((n) => listed.has(n))) return false;
  return headMatches(await store.head(facts.name), facts.size, facts.sha256);
}

function recordOutcome(dir: string, started: Date, outcome: OffsiteOutcome, log: Logger): void {
  const run: OffsiteRunRecord = { time: started.toISOString(), ...outcome };
  try {
    updateStatus(dir, (status) => ({
      ...status,
      offsite: { ...status.offsite, lastRun: run, ...(outcome.ok ? { lastSuccess: run } : { lastFailure: run }) },
    }));
  } catch (error) {
    log.warn(`could not update status.json: ${errorText(error)}`);
  }
}

/** The dry run's off-site check: credentials, bucket and prefix answer a listing; throws a CliError naming the problem. */
export async function checkOffsite(settings: Settings, log: Logger): Promise<void> {
  const config = offsiteConfig(settings);
  if (!config) return;
  const store = await OffsiteStore.open(config);
  try {
    const { backups } = await inventory(store);
    log.info(
      `Dry run: off-site ${config.url} answers (credentials from ${store.credentials.source}); ${backups.filter(isComplete).length} complete backup(s) there, keeping ${config.keep}`,
    );
    const fileWarning = credentialsFileWarning(store.credentials);
    if (fileWarning) log.warn(fileWarning);
    if (!settings.ageRecipients)
      log.warn(`Off-site copies will not be encrypted: ${config.url} can read them (set PLANETARION_AGE_RECIPIENTS)`);
  } catch (error) {
    throw new CliError(`off-site check failed: ${describeS3Error(error, config)}`, {
      advice: 'Fix the off-site settings (backup-database --help); local backups work regardless.',
    });
  } finally {
    store.close();
  }
}
