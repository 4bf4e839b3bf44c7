// The backup flow of the design: lock, health, space, a dump and a fingerprint of one snapshot,
// verification, an atomic move into place with sidecars, and only then rotation.
import { existsSync, linkSync, mkdirSync, statfsSync, statSync, unlinkSync, accessSync, constants } from 'node:fs';
import { dirname, join } from 'node:path';
import { resolveRecipients } from './age.ts';
import { fsyncDir } from './atomic-file.ts';
import { backupFileName, listBackups, tempFileName, type BackupFormat } from './backup-files.ts';
import { Docker } from './docker.ts';
import { streamDump, type DumpResult } from './dump.ts';
import { CliError, UsageError, errorText } from './errors.ts';
import { combineFingerprint, fingerprintSessionSettings, fingerprintTables, parseExclusions, type Fingerprint } from './fingerprint.ts';
import { checkContainerState, checkDatabaseHealth, notRunningMessage, NotReadyError } from './health.ts';
import { acquireLock, type HeldLock } from './lock.ts';
import type { Logger } from './log.ts';
import { writeSidecars, type BackupManifest } from './manifest.ts';
import { copyOffsite, type OffsiteOutcome } from './offsite/copy.ts';
import { sendPing } from './ping.ts';
import { PsqlSession } from './psql-session.ts';
import { removeLeftovers, rotateBackups } from './rotate.ts';
import type { Settings } from './settings.ts';
import type { Shell } from './shell.ts';
import { updateStatus } from './status.ts';
import { toolVersion } from './version.ts';

export interface BackupContext {
  settings: Settings;
  docker: string;
  $: Shell;
  log: Logger;
  dryRun: boolean;
  /** The caller (deploy) already holds the shared lock. */
  lockHeld?: boolean;
  now?: () => Date;
  onProgress?: (bytes: number) => void;
  /** Passed to streamDump: a second consumer of pg_dump's output (deploy's restore into the new slot). */
  tee?: (chunk: Buffer) => Promise<void>;
}

export interface BackupSummary {
  dryRun: boolean;
  file: string | undefined;
  path: string | undefined;
  size: number | undefined;
  sha256: string | undefined;
  format: BackupFormat;
  /** The age public keys the file is encrypted to; empty when it is not encrypted. */
  recipients: string[];
  fingerprint: string | null;
  durationsMs: { total: number; dump: number; fingerprint: number | null };
  rotated: string[];
  leftoversRemoved: string[];
  warnings: string[];
  /** The off-site phase; undefined when PLANETARION_OFFSITE is not set (or for deploy's backup). */
  offsite?: OffsiteOutcome;
}

/** The format a backup with these settings is written in. */
export const backupFormatOf = (settings: Settings): BackupFormat => (settings.format === 'custom' ? 'custom' : settings.compress === 'gzip' ? 'gzip' : 'plain');

/** Human size: 1.2 MB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The base dir must exist (exit 2 otherwise); the backup dir must exist or be creatable, and writable. */
export function checkBackupDirectories(settings: Settings, create: boolean): void {
  if (!existsSync(settings.dir)) {
    throw new UsageError(`PLANETARION_DIR '${settings.dir}' does not exist`, 'Create it, or set PLANETARION_DIR (or --dir) to the project folder on the NAS.');
  }
  for (const [name, dir] of [['PLANETARION_BACKUP_DIR', settings.backupDir], ['PLANETARION_LOG_DIR', settings.logDir]] as const) {
    if (!existsSync(dir)) {
      if (create) mkdirSync(dir, { recursive: true, mode: 0o700 });
      continue;
    }
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch {
      throw new CliError(`Permission denied: ${name} '${dir}' is not writable by this user`, {
        advice: `Fix its owner or mode, e.g. chmod 700 ${dir} (as the user cron runs the backup as).`,
      });
    }
  }
}

/** Free space check against the last backup's size (with a margin). */
function checkSpace(dir: string, log: Logger): void {
  const previous = listBackups(dir)[0];
  const needed = previous ? Math.ceil(statSync(previous.path).size * 1.2) : 1024 * 1024;
  // A dry run does not create the dir: measure the filesystem it would be made on.
  let existing = dir;
  while (!existsSync(existing)) existing = dirname(existing);
  const fs = statfsSync(existing);
  const free = fs.bavail * fs.bsize;
  if (free < needed) {
    const message = `not enough free space in ${dir}: ${formatBytes(free)} free, need about ${formatBytes(needed)}${previous ? ` (the last backup was ${formatBytes(statSync(previous.path).size)})` : ''}`;
    log.error(message);
    throw new CliError(message, { advice: 'Free space on that filesystem; the existing backups were not touched.' });
  }
  log.info(`Free space in ${dir}: ${formatBytes(free)} (need about ${formatBytes(needed)})`);
}

/** Moves the verified temp file to its final name without ever replacing an existing file. */
function placeBackup(dir: string, temp: string, start: Date, format: BackupFormat, encrypted: boolean): { name: string; path: string } {
  for (let bump = 0; bump < 60; bump++) {
    const name = backupFileName(new Date(start.getTime() + bump * 1000), format, encrypted);
    const path = join(dir, name);
    try {
      linkSync(temp, path); // fails with EEXIST rather than replacing, unlike rename
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw error;
    }
    unlinkSync(temp);
    fsyncDir(dir);
    return { name, path };
  }
  throw new CliError(`could not find a free backup file name in ${dir}`);
}

/** Runs one backup (or, with dryRun, every check and no dump); throws a CliError on failure. */
export async function runBackup(context: BackupContext): Promise<BackupSummary> {
  const { settings, log, $ } = context;
  const now = context.now ?? (() => new Date());
  const started = now();
  const format = backupFormatOf(settings);
  // Read (and checked) before anything is touched: a bad key or file is a usage error.
  const recipients = settings.ageRecipients ? resolveRecipients(settings.ageRecipients) : [];
  const encrypted = recipients.length > 0;
  checkBackupDirectories(settings, !context.dryRun);
  let lock: HeldLock | undefined;
  if (!context.dryRun && !context.lockHeld) {
    lock = acquireLock(settings.dir, 'backup-database');
    if (lock.tookOverFrom) log.warn(`Took over a stale lock of ${lock.tookOverFrom.command} (pid ${lock.tookOverFrom.pid}, started ${lock.tookOverFrom.started}): that run is gone`);
  }
  let temp: string | undefined;
  let session: PsqlSession | undefined;
  try {
    log.info(`${context.dryRun ? 'Dry run: checking' : 'Starting'} backup of database '${settings.dbName}' in container '${settings.container}'`);
    const leftoversRemoved = context.dryRun ? [] : removeLeftovers(settings.backupDir);
    for (const name of leftoversRemoved) log.warn(`Removed ${name}, left behind by a run that crashed`);

    const docker = new Docker(context.docker, $);
    const target = { container: settings.container, user: settings.dbUser, database: settings.dbName };
    const withFingerprint = settings.fingerprint === 'on' && !context.dryRun;
    // The fingerprint's session connects and exports the snapshot while the health checks run
    // (each is a `docker` round trip of ~0.1 s); it is only used once they pass, and a failed
    // check kills it. The exporting session stays open in its transaction until pg_dump has
    // imported the snapshot and the fingerprint has read every table of it.
    let exported: Promise<string[]> | undefined;
    if (withFingerprint) {
      session = PsqlSession.open({ docker: context.docker, ...target });
      exported = session.query(`${fingerprintSessionSettings} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot(), current_setting('server_version');`).then((rows) => rows[0]!);
      exported.catch(() => {});
    }
    // A dry run asks pg_isready in an exec of its own; a backup asks it in the dump's exec,
    // right before pg_dump (dump.ts), and then has only Docker's verdict to wait for here.
    const state = context.dryRun ? await checkDatabaseHealth(docker, $, target, log) : await checkContainerState(docker, target, log);
    checkSpace(settings.backupDir, log);

    const durations = { total: 0, dump: 0, fingerprint: null as number | null };
    if (context.dryRun) {
      log.info(`Dry run: all checks passed; a backup would be written to ${join(settings.backupDir, backupFileName(started, format, encrypted))}${encrypted ? `, encrypted to ${recipients.length} age recipient(s)` : ''}`);
      durations.total = now().getTime() - started.getTime();
      return { dryRun: true, file: undefined, path: undefined, size: undefined, sha256: undefined, format, recipients, fingerprint: null, durationsMs: durations, rotated: [], leftoversRemoved, warnings: [] };
    }

    const finalName = backupFileName(started, format, encrypted);
    if (encrypted) log.info(`Encrypting to ${recipients.length} age recipient(s): ${recipients.join(', ')}`);
    temp = join(settings.backupDir, tempFileName(finalName));
    let snapshot: string | undefined;
    let server = '';
    if (exported) {
      // A server that does not accept connections fails this session: pg_isready names why.
      [snapshot, server] = (await exported.catch(async (error: unknown) => {
        await checkDatabaseHealth(docker, $, target, log);
        throw error;
      })) as [string, string];
      log.info(`Exported snapshot ${snapshot}; dumping and fingerprinting it`);
    }
    const fingerprintStart = Date.now();
    const tablesPromise = session
      ? fingerprintTables(session, parseExclusions(settings.fingerprintExclude)).then((result) => {
          durations.fingerprint = Date.now() - fingerprintStart;
          return result;
        })
      : Promise.resolve(undefined);
    // Both run at once; a failure of either fails the backup.
    tablesPromise.catch(() => {});
    let dump: DumpResult;
    try {
      dump = await streamDump({
        docker: context.docker,
        container: settings.container,
        user: settings.dbUser,
        database: settings.dbName,
        snapshot,
        format,
        path: temp,
        recipients,
        onProgress: context.onProgress,
        tee: context.tee,
      });
    } catch (error) {
      if (error instanceof NotReadyError) {
        log.error(error.message);
        throw error;
      }
      // Tell apart "the container went away" from other dump failures: the seed's message applies.
      // Docker reports the state a moment after the streams break, so look for a few seconds.
      for (let i = 0; i < 15; i++) {
        const after = await docker.inspect(settings.container).catch(() => undefined);
        if (after && !after.running) {
          log.error(`${notRunningMessage(settings.container)} (it stopped during the dump)`);
          throw new CliError(`${notRunningMessage(settings.container)} (it stopped during the dump)`, {
            advice: 'The earlier backups were kept. Start the container and run the backup again.',
            cause: error,
          });
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      // A fingerprint session that failed ends the snapshot's transaction, and pg_dump then only
      // reports an invalid snapshot: the session's error is the cause worth naming.
      const fingerprintError = await Promise.race([
        tablesPromise.then(() => undefined, (e: unknown) => e),
        new Promise((resolve) => setTimeout(resolve, 2000, undefined)),
      ]);
      if (fingerprintError) throw new CliError(`the fingerprint query failed: ${errorText(fingerprintError)}`, { cause: error });
      throw error;
    }
    durations.dump = dump.durationMs;
    const tables = await tablesPromise;
    if (session) {
      await session.close();
      session = undefined;
    }

    const problems: string[] = [];
    if (dump.bytes === 0) problems.push('the dump is empty');
    if (!dump.inspection.gzipIntact) problems.push(`the ${format === 'custom' ? 'archive' : 'gzip stream'} is broken (${dump.inspection.gzipError})`);
    if (!dump.inspection.complete) problems.push("pg_dump's completion trailer '-- PostgreSQL database dump complete' is missing");
    if (!dump.inspection.restrictMatched) problems.push("the closing \\unrestrict line does not match the opening \\restrict");
    if (problems.length) throw new CliError(`the dump failed verification: ${problems.join('; ')}`, { advice: 'The earlier backups were kept. See the log and the database server log.' });
    log.info(`Dump verified: ${formatBytes(dump.dumpBytes)} (${formatBytes(dump.inspection.sqlBytes)} of SQL)${encrypted ? `, ${formatBytes(dump.bytes)} encrypted` : ''}, trailer present${format === 'gzip' ? ', gzip intact' : format === 'custom' ? ', pg_restore reads it whole' : ''}, sha256 ${dump.sha256}`);

    const fingerprint: Fingerprint | null = tables ? combineFingerprint(tables.tables, dump.inspection.sequences, tables.excluded) : null;
    if (fingerprint) log.info(`Fingerprint ${fingerprint.sha256} over ${fingerprint.tables.length} tables and ${fingerprint.sequences.length} sequences${fingerprint.excluded.length ? ` (excluded: ${fingerprint.excluded.join(', ')})` : ''}`);

    const previous = listBackups(settings.backupDir)[0];
    const placed = placeBackup(settings.backupDir, temp, started, format, encrypted);
    temp = undefined;
    durations.total = now().getTime() - started.getTime();
    const manifest: BackupManifest = {
      manifestVersion: 1,
      file: placed.name,
      created: started.toISOString(),
      size: dump.bytes,
      sha256: dump.sha256,
      format,
      compression: format === 'plain' ? 'none' : 'gzip',
      sqlBytes: dump.inspection.sqlBytes,
      ...(encrypted ? { encryption: { scheme: 'age' as const, recipients, dumpBytes: dump.dumpBytes } } : {}),
      // The dump's own header names both versions: no extra `docker exec` needed.
      postgres: { server: server || dump.inspection.serverVersion || 'unknown', pgDump: dump.inspection.pgDumpVersion ?? 'unknown' },
      database: settings.dbName,
      dbUser: settings.dbUser,
      container: settings.container,
      image: state.image,
      imageId: state.imageId,
      fingerprint,
      durationsMs: durations,
      toolVersion,
    };
    writeSidecars(placed.path, manifest);
    log.info(`Backup written: ${placed.path} (${formatBytes(dump.bytes)}) in ${(durations.total / 1000).toFixed(1)} s`);

    const warnings: string[] = [];
    if (previous && statSync(previous.path).size > 0 && previous.format === format && previous.encrypted === encrypted && dump.bytes < statSync(previous.path).size / 2) {
      const warning = `This backup (${formatBytes(dump.bytes)}) is less than half the size of the previous one, ${previous.name} (${formatBytes(statSync(previous.path).size)}): check that no data was lost`;
      log.warn(warning);
      warnings.push(warning);
    }

    const rotated = rotateBackups(settings.backupDir, settings.keep, placed.name);
    for (const name of rotated) log.info(`Rotation: removed ${name} (keeping the newest ${settings.keep})`);
    const onDisk = listBackups(settings.backupDir).map((b) => ({ file: b.name, size: statSync(b.path).size }));
    updateStatus(settings.dir, (status) => {
      const run = { time: started.toISOString(), durationMs: durations.total, file: placed.name, size: dump.bytes, sha256: dump.sha256, fingerprint: fingerprint?.sha256 ?? null };
      return { ...status, lastRun: { ...run, ok: true }, lastSuccess: run, backups: onDisk };
    });
    // Deploy's backup (the one with a tee) runs while the writers are stopped: the next scheduled
    // run's catch-up copies it off-site.
    const offsite = context.tee ? undefined : await copyOffsite({ settings, log, newFile: placed.name, now });
    await sendPing(settings.pingUrl, offsite?.ok !== false, log);
    log.info(offsite?.ok === false ? `Backup completed locally (${placed.name} is good); the off-site copy failed` : 'Backup completed successfully');
    return {
      dryRun: false,
      file: placed.name,
      path: placed.path,
      size: dump.bytes,
      sha256: dump.sha256,
      format,
      recipients,
      fingerprint: fingerprint?.sha256 ?? null,
      durationsMs: durations,
      rotated,
      leftoversRemoved,
      warnings,
      offsite,
    };
  } catch (error) {
    session?.kill();
    if (temp) {
      try {
        unlinkSync(temp);
      } catch {
        // never created
      }
    }
    if (!context.dryRun && !(error instanceof UsageError)) {
      const message = errorText(error);
      log.error(`Backup failed: ${message}`);
      try {
        updateStatus(settings.dir, (status) => {
          const run = { time: started.toISOString(), durationMs: now().getTime() - started.getTime(), error: message };
          return { ...status, lastRun: { ...run, ok: false }, lastFailure: run };
        });
      } catch (statusError) {
        log.warn(`could not update status.json: ${errorText(statusError)}`);
      }
      await sendPing(settings.pingUrl, false, log);
    }
    throw error;
  } finally {
    lock?.release();
  }
}
