// restore-database's flow: pick the file(s), confirm, take the lock, then restore with the
// engine in lib/restore/attempt.ts (or drill, or roll back), and record what happened.
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { isEncrypted, missingIdentityReason } from '../store/check-file.ts';
import { oldScriptCaveat, oldScriptHash } from '../store/backup-status.ts';
import { listBackups, newestFirst, parseBackupName, recordedOrder, type BackupFile } from '../store/backup-files.ts';
import { dropLeftoverScratch } from './database-swap.ts';
import { CliError, ExitCode, UsageError, errorText } from '../errors.ts';
import { Interruption } from './interruption.ts';
import { acquireLock, type HeldLock } from '../host/lock.ts';
import type { Logger } from '../log.ts';
import { readManifest, writeSidecars } from '../store/manifest.ts';
import {
  oneShotSql,
  restoreBackup,
  restoreWithFallback,
  rollbackDatabase,
  type RestoreOptions,
  type RestoreResult,
  type RestoreTarget,
} from './attempt.ts';
import type { Settings } from '../settings.ts';
import type { Shell } from '../host/shell.ts';
import { updateStatus } from '../store/status-file.ts';
import { formatAge, formatBytes } from '../format.ts';

/** Resolves FILE | latest to a path; a bare name is looked up in the backup dir. */
export function resolveBackupArgument(argument: string | undefined, backupDir: string): string {
  if (argument === undefined || argument === 'latest') {
    const newest = listBackups(backupDir)[0];
    if (!newest)
      throw new CliError(`there is no backup in ${backupDir}`, {
        advice: 'Run backup-database first, or name a file.',
      });
    return newest.path;
  }
  const candidates = isAbsolute(argument) ? [argument] : [resolve(argument), join(backupDir, argument)];
  const found = candidates.find((p) => existsSync(p));
  if (!found)
    throw new UsageError(
      `backup file '${argument}' not found (looked at ${candidates.join(', ')})`,
      `List the backups with: backup-database --status`,
    );
  return found;
}

/**
 * The fallback candidates: the chosen file first, then every backup in the dir older than it,
 * newest first, in the folder's order (by sequence number, never by the clock: a stamp written
 * while the clock was set back must not drop an older backup or add a newer one). A file from
 * elsewhere is placed in that order by its own manifest's number, else by its stamp. The old
 * scripts' backups only when an unproven restore was accepted (--no-verify).
 */
export function fallbackCandidates(first: string, backupDir: string, includeOldScript = false): string[] {
  const ordered = listBackups(backupDir).filter((b) => includeOldScript || b.origin !== 'old-script');
  const at = ordered.findIndex((b) => resolve(b.path) === resolve(first));
  if (at >= 0) return [first, ...ordered.slice(at + 1).map((b) => b.path)];
  const parsed = parseBackupName(basename(first));
  if (!parsed) return [first, ...ordered.map((b) => b.path)];
  const own = { ...parsed, sequence: recordedOrder(first)?.sequence };
  return [first, ...ordered.filter((b) => newestFirst(own, b) < 0).map((b) => b.path)];
}

/** The backup as its folder lists it, when it is one of the old scripts' (undefined otherwise). */
export function oldScriptBackupAt(file: string): BackupFile | undefined {
  const name = basename(file);
  if (!parseBackupName(name)) return undefined;
  return listBackups(dirname(file)).find((b) => b.name === name && b.origin === 'old-script');
}

/**
 * An old script backup carries no proof: refused (exit 2) unless the operator accepts an unproven
 * restore with --no-verify, and never drilled (a drill is a proof); accepted, it is said in the log.
 */
export function checkOldScriptBackup(
  file: string,
  options: Pick<RestoreFlowOptions, 'mode' | 'noVerify' | 'log'>,
): void {
  const old = oldScriptBackupAt(file);
  if (!old) return;
  const caveat = oldScriptCaveat(oldScriptHash(file));
  if (options.mode === 'test')
    throw new UsageError(
      `${old.name} is an ${caveat}: a restore drill cannot prove it`,
      'Drill a backup made by backup-database (backup-database --status lists them).',
    );
  if (!options.noVerify) {
    throw new UsageError(
      `${old.name} is an ${caveat}`,
      'Restore it unproven with --no-verify (the restored data cannot be checked against anything), or pick a backup made by backup-database (backup-database --status lists them).',
    );
  }
  options.log.warn(
    `${old.name} is an old script backup: restoring it unproven (--no-verify), as accepted; nothing can check the restored data against it`,
  );
}

/** What the confirmation shows: file, age, size, target. */
export function describeRestore(file: string, target: RestoreTarget, now = new Date()): string {
  const parsed = parseBackupName(basename(file));
  const age = parsed ? `, ${formatAge(Math.round((now.getTime() - parsed.time.getTime()) / 1000))} old` : '';
  const unproven = oldScriptBackupAt(file) ? ', an old script backup, restored UNPROVEN' : '';
  return `Restore ${file} (${formatBytes(statSync(file).size)}${age}${unproven}) into database '${target.database}' in container '${target.container}'.\nThe current database is kept as '${target.database}_previous_<time>' for --rollback.`;
}

/** Asks the operator through the command's callback; without one (no terminal), refuses unless --yes was given. */
async function confirm(question: string, yes: boolean, ask: RestoreFlowOptions['ask']): Promise<void> {
  if (yes) return;
  if (!ask) {
    throw new UsageError(
      'restore-database replaces the live database and needs confirmation',
      'Run it on a terminal to be asked, or pass --yes.',
    );
  }
  if (!(await ask(`${question}\nProceed? [y/N] `)))
    throw new CliError('restore cancelled; nothing was changed', { exitCode: ExitCode.failed });
}

export interface RestoreFlowOptions {
  settings: Settings;
  docker: string;
  $: Shell;
  log: Logger;
  file: string | undefined;
  yes: boolean;
  /** Asks the operator a yes/no question; undefined where nobody can answer (no terminal). */
  ask?: (question: string) => Promise<boolean>;
  /** Shows the operator a line (the dry run's description of the restore). */
  say: (line: string) => void;
  dryRun: boolean;
  fallback: boolean;
  noVerify: boolean;
  /** Restore a backup of another database than the target (--other-database). */
  otherDatabase?: boolean;
  mode: 'restore' | 'test' | 'rollback';
  /** age secret keys read from --identity / PLANETARION_AGE_IDENTITY (or deploy's stdin). */
  identities?: string[];
}

export interface RestoreFlowResult {
  mode: 'restore' | 'test' | 'rollback';
  ok: boolean;
  winner: RestoreResult | undefined;
  attempts: RestoreResult[];
  rollback?: { restored: string; previous: string };
  dryRun?: { file: string; target: RestoreTarget };
}

/** Records a drill's outcome in the backup's manifest and in status.json. */
function recordDrill(settings: Settings, attempt: RestoreResult): void {
  const drill = {
    time: new Date().toISOString(),
    durationMs: attempt.durationMs,
    passed: attempt.ok,
    detail: attempt.ok ? `fingerprint ${attempt.fingerprint ?? 'not checked'}` : (attempt.reason ?? 'failed'),
  };
  const manifest = readManifest(attempt.file);
  if (manifest) writeSidecars(attempt.file, { ...manifest, lastDrill: drill });
  updateStatus(settings.dir, (status) => ({ ...status, lastDrill: { ...drill, file: basename(attempt.file) } }));
}

/**
 * Takes the shared lock and catches SIGINT/SIGTERM/SIGHUP for the body, so a signal stops it
 * at a safe point; scratch databases a killed run left behind are dropped first.
 */
async function underLock<T>(
  options: RestoreFlowOptions,
  target: RestoreTarget,
  command: string,
  body: (abort: AbortSignal) => Promise<T>,
): Promise<T> {
  const { log } = options;
  const lock: HeldLock = acquireLock(options.settings.dir, command);
  const interruption = new Interruption(log);
  try {
    if (lock.tookOverFrom)
      log.warn(
        `Took over a stale lock of ${lock.tookOverFrom.command} (pid ${lock.tookOverFrom.pid}, started ${lock.tookOverFrom.started}): that run is gone`,
      );
    await dropLeftoverScratch(oneShotSql(options.$, target), target.database, log).catch((e: unknown) =>
      log.warn(`Could not look for scratch databases left by a killed run: ${errorText(e)}`),
    );
    return await body(interruption.abort);
  } finally {
    interruption.uninstall();
    lock.release();
  }
}

/** The error for a restore or drill that has no winner: what happened to the live database. */
function noWinnerError(
  mode: RestoreFlowResult['mode'],
  target: RestoreTarget,
  attempts: RestoreResult[],
  abort: AbortSignal,
): CliError {
  const last = attempts[attempts.length - 1];
  const what = mode === 'test' ? 'restore drill' : 'restore';
  const why = abort.aborted
    ? `interrupted by ${String(abort.reason)}`
    : `${attempts.length > 1 ? `all ${attempts.length} candidates failed; last: ` : ''}${last?.reason ?? 'no attempt'}`;
  const diagnostics = attempts
    .map((a) => a.diagnostics)
    .filter(Boolean)
    .join(', ');
  const live = attempts.some((a) => a.reachedSwap)
    ? `The swap did not commit: '${target.database}' is the database it was and accepts connections again (see the log); no other backup was tried.`
    : `The live database '${target.database}' was not changed.`;
  return new CliError(`${what} failed: ${why}`, {
    advice: `${live}${diagnostics ? ` Diagnostics: ${diagnostics}` : ''}`,
  });
}

/** Runs restore-database; throws CliError when nothing could be restored. */
export async function runRestore(options: RestoreFlowOptions): Promise<RestoreFlowResult> {
  const { settings, log, $ } = options;
  const target: RestoreTarget = {
    docker: options.docker,
    container: settings.container,
    user: settings.dbUser,
    database: settings.dbName,
  };
  if (options.mode === 'rollback') {
    await confirm(
      `Roll back database '${target.database}' in container '${target.container}' to its previous version.`,
      options.yes || options.dryRun,
      options.ask,
    );
    if (options.dryRun) return { mode: 'rollback', ok: true, winner: undefined, attempts: [] };
    return await underLock(options, target, 'restore-database --rollback', async (abort) => {
      const rollback = await rollbackDatabase(target, log, new Date(), abort);
      log.info(`Rolled back: '${target.database}' is now what was '${rollback.restored}'`);
      return { mode: 'rollback' as const, ok: true, winner: undefined, attempts: [], rollback };
    });
  }
  if (options.mode === 'test' && options.noVerify)
    throw new UsageError('--test proves the backup by its fingerprint and cannot be combined with --no-verify');

  const file = resolveBackupArgument(options.file, settings.backupDir);
  // A configuration problem, caught before the lock and any database (exit 2).
  if (isEncrypted(file) && !options.identities?.length)
    throw new UsageError(
      missingIdentityReason(file),
      'The identity (secret key) is the file age-keygen wrote; the NAS holds only the public key.',
    );
  checkOldScriptBackup(file, options);
  if (options.dryRun) {
    options.say(describeRestore(file, target));
    log.info(
      `Dry run: would restore ${file} into '${target.database}' in '${target.container}'${options.fallback ? ', falling back to older backups' : ''}`,
    );
    return { mode: options.mode, ok: true, winner: undefined, attempts: [], dryRun: { file, target } };
  }
  if (options.mode === 'restore') await confirm(describeRestore(file, target), options.yes, options.ask);
  return await underLock(
    options,
    target,
    `restore-database${options.mode === 'test' ? ' --test' : ''}`,
    async (abort) => {
      const engine: RestoreOptions = {
        target,
        $,
        log,
        logDir: settings.logDir,
        noVerify: options.noVerify,
        otherDatabase: options.otherDatabase,
        drillOnly: options.mode === 'test',
        identities: options.identities,
        abort,
        // Encrypted backups keep row data off the NAS in clear: so do the log and the diagnostics.
        redactRowData: Boolean(settings.ageRecipients) || isEncrypted(file),
      };
      const { winner, attempts } = options.fallback
        ? await restoreWithFallback(fallbackCandidates(file, settings.backupDir, options.noVerify), engine)
        : await restoreBackup(file, engine).then((r) => ({ winner: r.ok ? r : undefined, attempts: [r] }));
      if (options.mode === 'test') for (const attempt of attempts) recordDrill(settings, attempt);
      if (!winner) throw noWinnerError(options.mode, target, attempts, abort);
      log.info(
        options.mode === 'test'
          ? `Restore drill passed: ${basename(winner.file)} restores and its fingerprint is proven`
          : `Restore completed: '${target.database}' now holds ${basename(winner.file)}`,
      );
      return { mode: options.mode, ok: true, winner, attempts };
    },
  );
}
