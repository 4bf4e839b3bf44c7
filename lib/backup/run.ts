// The backup flow of the design, in named phases: preflight (folders, lock, health, space),
// snapshot, dump and fingerprint of that one snapshot, verify, place (a free name, the folder's
// sequence number, the sidecars), and only then rotate. The dump's exec starts with the checks
// and waits in the container for their verdict, so its start costs no time of its own; pg_dump
// itself never runs before they pass. Each phase's decision is a pure function
// (dumpProblems, placementNames, buildManifest, rotationHoldReasons, planRotation).
import { existsSync, statfsSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { resolveRecipients } from '../age.ts';
import { fsyncDir, placeNoReplace, type PlaceCalls } from '../host/atomic-file.ts';
import {
  backupFileName,
  listBackups,
  orderWarnings,
  takeSequence,
  tempFileName,
  type BackupFile,
  type WalPosition,
} from '../store/backup-files.ts';
import {
  type DatabaseProperties,
  databasePropertiesQuery,
  parseDatabaseProperties,
} from '../dump/database-properties.ts';
import { Docker } from '../host/docker.ts';
import { execDump, type DumpExec, type DumpResult, type BackupFormat } from '../dump/pg-dump.ts';
import { CliError, UsageError, errorText } from '../errors.ts';
import { formatBytes } from '../format.ts';
import {
  combineFingerprint,
  fingerprintSessionSettings,
  fingerprintTables,
  parseExclusions,
  type Fingerprint,
} from '../dump/fingerprint.ts';
import { checkContainerState, checkDatabaseHealth, notRunningMessage, NotReadyError } from '../host/health.ts';
import { acquireLock, type HeldLock } from '../host/lock.ts';
import type { Logger } from '../log.ts';
import { readManifest, writeSidecars, type BackupManifest } from '../store/manifest.ts';
import { copyOffsite, type OffsiteOutcome } from '../offsite/copy.ts';
import { sendPing } from './ping.ts';
import type { PsqlSession } from '../host/psql-session.ts';
import { removeLeftovers, rotateBackups, rotationHoldReasons, type RotationFacts } from '../store/rotate.ts';
import type { Settings } from '../settings.ts';
import type { Shell } from '../host/shell.ts';
import { updateStatus, type RotationStatus } from '../store/status-file.ts';
import { toolVersion } from '../version.ts';
import { checkBackupDirectories } from '../store/folders.ts';

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
  /** Passed to execDump: a second consumer of pg_dump's output (deploy's restore into the new slot). */
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
  /** The backup folder's number for it (lib/store/backup-files.ts): the order no clock can break. */
  sequence: number | undefined;
  fingerprint: string | null;
  durationsMs: { total: number; dump: number; fingerprint: number | null };
  rotated: string[];
  /** Why rotation deleted nothing this time; empty when it ran. */
  rotationHeld: string[];
  leftoversRemoved: string[];
  warnings: string[];
  /** The off-site phase; undefined when PLANETARION_OFFSITE is not set (or for deploy's backup). */
  offsite?: OffsiteOutcome;
}

/** The format a backup with these settings is written in. */
export const backupFormatOf = (settings: Settings): BackupFormat =>
  settings.format === 'custom' ? 'custom' : settings.compress === 'gzip' ? 'gzip' : 'plain';

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

/** What every phase knows about the run from its start. */
interface RunFacts {
  started: Date;
  now: () => Date;
  format: BackupFormat;
  recipients: string[];
  encrypted: boolean;
}

/** What a run holds that its failure path must clean up. */
interface RunResources {
  lock: HeldLock | undefined;
  session: PsqlSession | undefined;
  temp: string | undefined;
  /** The start signal, sent as the run begins; awaited before the end signal so they arrive in order. */
  startPing: Promise<boolean> | undefined;
}

/** What the snapshot's session read in the snapshot: its name for pg_dump, the server, the WAL position. */
export interface SnapshotFacts {
  snapshot: string;
  server: string;
  wal: WalPosition | undefined;
}

/**
 * The snapshot session's query: export a snapshot, and read in it the server's version and where
 * the WAL stands (on a standby, where replay stands), with the cluster's identity. Positions
 * compare only within one cluster; a role that may not read pg_control_system() records none.
 */
export const snapshotQuery = `${fingerprintSessionSettings} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT pg_export_snapshot(), current_setting('server_version'),
  CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
  CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') THEN (SELECT system_identifier::text FROM pg_control_system()) END;`;

/** The snapshot query's row as facts. Pure. */
export function parseSnapshotRow(row: string[]): SnapshotFacts {
  const [snapshot = '', server = '', lsn = '', systemIdentifier = ''] = row;
  return { snapshot, server, wal: lsn ? { lsn, systemIdentifier: systemIdentifier || null } : undefined };
}

/**
 * Phase preflight: the log's first line, crashed runs' leftovers, then at once the dump's exec
 * (it waits in the container for the verdict, see startDump), the start ping, the snapshot
 * session and the checks (health, space), all under way together; the dump phase awaits them.
 */
function preflight(context: BackupContext, run: RunFacts, held: RunResources) {
  const { settings, log, $ } = context;
  log.info(
    `${context.dryRun ? 'Dry run: checking' : 'Starting'} backup of database '${settings.dbName}' in container '${settings.container}'`,
  );
  const leftoversRemoved = context.dryRun ? [] : removeLeftovers(settings.backupDir);
  for (const name of leftoversRemoved) log.warn(`Removed ${name}, left behind by a run that crashed`);
  // First of all: the exec's start is the longest step before pg_dump can run.
  const dump = context.dryRun ? undefined : startDump(context, run, held);
  if (!context.dryRun) held.startPing = sendPing(settings.pingUrl, 'start', log);
  const docker = new Docker(context.docker, $);
  const target = { container: settings.container, user: settings.dbUser, database: settings.dbName };
  const snapshot = dump?.session ? openSnapshot(dump.session, held) : undefined;
  // A dry run asks pg_isready in an exec of its own; a backup asks it in the dump's exec only
  // when pg_dump failed (dump/pg-dump.ts), and has only Docker's verdict to wait for here.
  const checks = (async () => {
    const state = context.dryRun
      ? await checkDatabaseHealth(docker, $, target, log)
      : await checkContainerState(docker, target, log);
    checkSpace(settings.backupDir, log);
    return state;
  })();
  checks.catch(() => {}); // awaited by the phase that needs the verdict
  return { leftoversRemoved, docker, target, checks, snapshot, dump };
}

/** The dump's exec, started before the checks: pg_dump runs once `open` is called, never after `cancel`. */
interface StartedDump extends DumpExec {
  /** The file it writes (the run's temp file until placed). */
  temp: string;
}

/**
 * Starts the dump's exec into the run's temp file (lib/dump/pg-dump.ts); pg_dump waits for
 * `open`. With the fingerprint on, the snapshot's session runs inside that same exec.
 */
function startDump(context: BackupContext, run: RunFacts, held: RunResources): StartedDump {
  const { settings, log } = context;
  if (run.encrypted) log.info(`Encrypting to ${run.recipients.length} age recipient(s): ${run.recipients.join(', ')}`);
  const temp = join(settings.backupDir, tempFileName(backupFileName(run.started, run.format, run.encrypted)));
  held.temp = temp;
  const session = settings.fingerprint === 'on';
  const exec = execDump({
    docker: context.docker,
    container: settings.container,
    user: settings.dbUser,
    database: settings.dbName,
    // What pg_dump leaves out of the dump, for the manifest: read in the dump's own exec, over the
    // session when there is one (dumpAndFingerprint), by a psql of its own beside pg_dump otherwise.
    sideQuery: session ? undefined : databasePropertiesQuery(settings.dbName),
    format: run.format,
    // Only the fingerprint reads the sequence values the dump sets, in the snapshot its session exports.
    sequences: session,
    session,
    path: temp,
    recipients: run.recipients,
    onProgress: context.onProgress,
    tee: context.tee,
  });
  return Object.assign(exec, { temp });
}

type Preflight = ReturnType<typeof preflight>;

/**
 * Phase snapshot, started by preflight: the session in the dump's exec connects and exports the
 * snapshot while the health checks run; it is only used once they pass, and a failed check kills
 * the exec. It stays open in its transaction until pg_dump has imported the snapshot and the
 * fingerprint has read every table of it.
 */
function openSnapshot(session: PsqlSession, held: RunResources): Promise<SnapshotFacts> {
  held.session = session;
  const exported = session.query(snapshotQuery).then((rows) => parseSnapshotRow(rows[0] ?? []));
  exported.catch(() => {});
  return exported;
}

/** Waits for the exported snapshot; a server that does not accept connections fails the session, and pg_isready names why. */
async function awaitSnapshot(context: BackupContext, pre: Preflight): Promise<SnapshotFacts | undefined> {
  if (!pre.snapshot) return undefined;
  const facts = await pre.snapshot.catch(async (error: unknown) => {
    await checkDatabaseHealth(pre.docker, context.$, pre.target, context.log);
    throw error;
  });
  context.log.info(
    `Exported snapshot ${facts.snapshot}${facts.wal ? ` at WAL ${facts.wal.lsn}` : ''}; dumping and fingerprinting it`,
  );
  return facts;
}

/**
 * Phase dump and fingerprint: the checks and the snapshot decide whether the waiting dump opens
 * (a failed check cancels it before pg_dump runs); then the dump and the fingerprint read the
 * one snapshot at once, and a failure of either fails the backup.
 */
async function dumpAndFingerprint(context: BackupContext, held: RunResources, pre: Preflight, started: StartedDump) {
  const { settings } = context;
  const durations = { total: 0, dump: 0, fingerprint: null as number | null };
  const { state, snapshot } = await pre.checks
    .then(async (state) => ({ state, snapshot: await awaitSnapshot(context, pre) }))
    .catch(async (error: unknown) => {
      started.cancel(error);
      await started.done.catch(() => {});
      throw error;
    });
  started.open(snapshot?.snapshot);
  const session = held.session;
  // The exec ends once pg_dump is done and the session is closed: closed as soon as it has read
  // every table, whether or not the fingerprint succeeded. The database's properties come first:
  // a psql of their own in the exec put ~30 ms on the dump's path, and their failure only warns.
  const sessionRead = session
    ? (async () => {
        const answer = await session.tryQuery(databasePropertiesQuery(settings.dbName));
        const properties: DumpResult['side'] = 'rows' in answer ? { answer: answer.rows[0]?.[0] ?? '' } : answer;
        const start = Date.now();
        const tables = await fingerprintTables(session, parseExclusions(settings.fingerprintExclude));
        durations.fingerprint = Date.now() - start;
        return { properties, tables };
      })().finally(() => session.close())
    : Promise.resolve(undefined);
  sessionRead.catch(() => {});
  let dump: DumpResult;
  try {
    dump = await started.done;
  } catch (error) {
    throw await explainDumpFailure(context, pre.docker, sessionRead, error);
  }
  durations.dump = dump.durationMs;
  const read = await sessionRead;
  held.session = undefined;
  const fingerprint: Fingerprint | null = read
    ? combineFingerprint(read.tables.tables, dump.inspection.sequences, read.tables.excluded)
    : null;
  return { dump, fingerprint, durations, state, snapshot, properties: read ? read.properties : dump.side };
}

/** The error that names why the dump failed: the container stopping, or the fingerprint's session failing first. */
async function explainDumpFailure(
  context: BackupContext,
  docker: Docker,
  sessionRead: Promise<unknown>,
  error: unknown,
): Promise<unknown> {
  const { settings, log } = context;
  if (error instanceof NotReadyError) {
    log.error(error.message);
    return error;
  }
  // Tell apart "the container went away" from other dump failures: the old scripts' message applies.
  // Docker reports the state a moment after the streams break, so look for a few seconds.
  for (let i = 0; i < 15; i++) {
    const after = await docker.inspect(settings.container).catch(() => undefined);
    if (after && !after.running) {
      log.error(`${notRunningMessage(settings.container)} (it stopped during the dump)`);
      return new CliError(`${notRunningMessage(settings.container)} (it stopped during the dump)`, {
        advice: 'The earlier backups were kept. Start the container and run the backup again.',
        cause: error,
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  // A fingerprint session that failed ends the snapshot's transaction, and pg_dump then only
  // reports an invalid snapshot: the session's error is the cause worth naming. A pg_dump that
  // failed for a reason of its own ends the session (dump/pg-dump.ts): its message stands.
  if (!/snapshot/i.test(errorText(error))) return error;
  const fingerprintError = await Promise.race([
    sessionRead.then(
      () => undefined,
      (e: unknown) => e,
    ),
    new Promise((resolve) => setTimeout(resolve, 2000, undefined)),
  ]);
  if (fingerprintError)
    return new CliError(`the fingerprint query failed: ${errorText(fingerprintError)}`, { cause: error });
  return error;
}

/** The database-level properties the side query or the session read; a failure only warns (a restore then uses the live database's). */
function propertiesOf(side: DumpResult['side'], database: string, log: Logger): DatabaseProperties | undefined {
  try {
    if (side && 'answer' in side) return parseDatabaseProperties(side.answer);
    throw new Error(side?.error || 'no answer');
  } catch (error) {
    log.warn(`Could not read the database-level properties of '${database}' for the manifest: ${errorText(error)}`);
    return undefined;
  }
}

/** Phase verify, its decision: what is wrong with a finished dump; empty when nothing is. Pure. */
export function dumpProblems(dump: Pick<DumpResult, 'bytes' | 'inspection'>, format: BackupFormat): string[] {
  const problems: string[] = [];
  if (dump.bytes === 0) problems.push('the dump is empty');
  if (!dump.inspection.gzipIntact)
    problems.push(`the ${format === 'custom' ? 'archive' : 'gzip stream'} is broken (${dump.inspection.gzipError})`);
  if (!dump.inspection.complete)
    problems.push("pg_dump's completion trailer '-- PostgreSQL database dump complete' is missing");
  if (!dump.inspection.restrictMatched)
    problems.push('the closing \\unrestrict line does not match the opening \\restrict');
  return problems;
}

/** Phase verify: throws when the dump is not whole; logs what was proven. */
function verifyDump(log: Logger, run: RunFacts, dump: DumpResult, fingerprint: Fingerprint | null): void {
  const problems = dumpProblems(dump, run.format);
  if (problems.length)
    throw new CliError(`the dump failed verification: ${problems.join('; ')}`, {
      advice: 'The earlier backups were kept. See the log and the database server log.',
    });
  const checks = run.format === 'gzip' ? ', gzip intact' : run.format === 'custom' ? ', pg_restore reads it whole' : '';
  log.info(
    `Dump verified: ${formatBytes(dump.dumpBytes)} (${formatBytes(dump.inspection.sqlBytes)} of SQL)${run.encrypted ? `, ${formatBytes(dump.bytes)} encrypted` : ''}, trailer present${checks}, sha256 ${dump.sha256}`,
  );
  if (fingerprint)
    log.info(
      `Fingerprint ${fingerprint.sha256} over ${fingerprint.tables.length} tables and ${fingerprint.sequences.length} sequences${fingerprint.excluded.length ? ` (excluded: ${fingerprint.excluded.join(', ')})` : ''}`,
    );
}

/** The names a backup started at `start` may take, in order: its second, then the next ones if taken. Pure. */
export function placementNames(start: Date, format: BackupFormat, encrypted: boolean, tries = 60): string[] {
  return Array.from({ length: tries }, (_, bump) =>
    backupFileName(new Date(start.getTime() + bump * 1000), format, encrypted),
  );
}

/** Moves the verified temp file to the first free name, never replacing an existing file. */
export function placeBackup(
  dir: string,
  temp: string,
  names: string[],
  calls?: PlaceCalls,
): { name: string; path: string } {
  for (const name of names) {
    const path = join(dir, name);
    if (!placeNoReplace(temp, path, calls)) continue;
    fsyncDir(dir);
    return { name, path };
  }
  throw new CliError(`could not find a free backup file name in ${dir}`);
}

/** What the manifest is made of, besides the settings. */
interface ManifestInput {
  file: string;
  run: RunFacts;
  sequence: number;
  dump: DumpResult;
  fingerprint: Fingerprint | null;
  snapshot: SnapshotFacts | undefined;
  state: { image: string | undefined; imageId: string | undefined };
  durations: BackupManifest['durationsMs'];
  /** What pg_dump leaves out (encoding, locale, owner, ACL, settings); undefined when it could not be read. */
  databaseProperties?: DatabaseProperties;
}

/** The manifest of a placed backup. Pure. */
export function buildManifest(settings: Settings, input: ManifestInput): BackupManifest {
  const { dump, run } = input;
  return {
    manifestVersion: 1,
    file: input.file,
    created: run.started.toISOString(),
    sequence: input.sequence,
    ...(input.snapshot?.wal ? { wal: input.snapshot.wal } : {}),
    size: dump.bytes,
    sha256: dump.sha256,
    format: run.format,
    compression: run.format === 'plain' ? 'none' : 'gzip',
    sqlBytes: dump.inspection.sqlBytes,
    ...(run.encrypted
      ? { encryption: { scheme: 'age' as const, recipients: run.recipients, dumpBytes: dump.dumpBytes } }
      : {}),
    // The dump's own header names both versions: no extra `docker exec` needed.
    postgres: {
      server: input.snapshot?.server || dump.inspection.serverVersion || 'unknown',
      pgDump: dump.inspection.pgDumpVersion ?? 'unknown',
    },
    database: settings.dbName,
    ...(input.databaseProperties ? { databaseProperties: input.databaseProperties } : {}),
    dbUser: settings.dbUser,
    container: settings.container,
    image: input.state.image,
    imageId: input.state.imageId,
    fingerprint: input.fingerprint,
    durationsMs: input.durations,
    toolVersion,
  };
}

/** The facts the rotation hold compares, of a backup on disk (its manifest's fingerprint, if any). */
function rotationFacts(backup: BackupFile): RotationFacts {
  return {
    name: backup.name,
    size: statSync(backup.path).size,
    format: backup.format,
    encrypted: backup.encrypted,
    fingerprint: readManifest(backup.path)?.fingerprint,
  };
}

/**
 * Phase place: the name, the folder's next sequence number, the manifest and checksum. The
 * previous backup is read first, for the rotation hold.
 */
function placePhase(
  context: BackupContext,
  run: RunFacts,
  temp: string,
  made: Omit<ManifestInput, 'file' | 'run' | 'sequence'>,
) {
  const { settings, log } = context;
  const before = listBackups(settings.backupDir);
  const previous = before[0] ? rotationFacts(before[0]) : undefined;
  const placed = placeBackup(settings.backupDir, temp, placementNames(run.started, run.format, run.encrypted));
  const sequence = takeSequence(settings.backupDir, before);
  made.durations.total = run.now().getTime() - run.started.getTime();
  const manifest = buildManifest(settings, { ...made, file: placed.name, run, sequence });
  writeSidecars(placed.path, manifest);
  log.info(
    `Backup written: ${placed.path} (${formatBytes(made.dump.bytes)}, sequence ${sequence}) in ${(made.durations.total / 1000).toFixed(1)} s`,
  );
  return { ...placed, manifest, previous };
}

/**
 * Phase rotate: hold (delete nothing) when the new backup looks like lost data, else remove all
 * but the newest `keep`, never the new one or the newest drilled one. Reports a future date.
 */
function rotatePhase(context: BackupContext, run: RunFacts, placed: ReturnType<typeof placePhase>) {
  const { settings, log } = context;
  const { manifest } = placed;
  const current = {
    name: placed.name,
    size: manifest.size,
    format: manifest.format,
    encrypted: run.encrypted,
    fingerprint: manifest.fingerprint,
  };
  const heldBecause = rotationHoldReasons(current, placed.previous, formatBytes);
  const warnings: string[] = [];
  let removed: string[] = [];
  if (heldBecause.length) {
    for (const reason of heldBecause) warnings.push(`${reason}: check that no data was lost`);
    warnings.push(
      `Rotation held: no backup was deleted, because this one looks like data was lost (backup-database --status says why; the next backup rotates as usual)`,
    );
    for (const warning of warnings) log.warn(warning);
  } else {
    removed = rotateBackups(settings.backupDir, settings.keep, [placed.name]);
    for (const name of removed) log.info(`Rotation: removed ${name} (keeping the newest ${settings.keep})`);
  }
  const onDisk = listBackups(settings.backupDir);
  for (const warning of orderWarnings(onDisk, run.now())) {
    log.warn(warning);
    warnings.push(warning);
  }
  const rotation: RotationStatus = { time: run.started.toISOString(), file: placed.name, removed, heldBecause };
  return { removed, warnings, rotation, onDisk: onDisk.map((b) => ({ file: b.name, size: statSync(b.path).size })) };
}

/** A dry run's summary: every check passed, nothing was written. */
function dryRunSummary(
  context: BackupContext,
  run: RunFacts,
  summary: Pick<BackupSummary, 'format' | 'recipients' | 'leftoversRemoved'>,
): BackupSummary {
  const { settings, log } = context;
  log.info(
    `Dry run: all checks passed; a backup would be written to ${join(settings.backupDir, backupFileName(run.started, run.format, run.encrypted))}${run.encrypted ? `, encrypted to ${run.recipients.length} age recipient(s)` : ''}`,
  );
  const durationsMs = { total: run.now().getTime() - run.started.getTime(), dump: 0, fingerprint: null };
  return {
    ...summary,
    dryRun: true,
    file: undefined,
    path: undefined,
    size: undefined,
    sha256: undefined,
    sequence: undefined,
    fingerprint: null,
    durationsMs,
    rotated: [],
    rotationHeld: [],
    warnings: [],
  };
}

/** status.json after a good backup: the run, the last success, the backups on disk, the rotation. */
function recordSuccess(
  dir: string,
  run: RunFacts,
  file: string,
  dump: { bytes: number; sha256: string },
  fingerprint: { sha256: string } | null | undefined,
  durationMs: number,
  rotation: ReturnType<typeof rotatePhase>,
): void {
  updateStatus(dir, (status) => {
    const last = {
      time: run.started.toISOString(),
      durationMs,
      file,
      size: dump.bytes,
      sha256: dump.sha256,
      fingerprint: fingerprint?.sha256 ?? null,
    };
    return {
      ...status,
      lastRun: { ...last, ok: true },
      lastSuccess: last,
      backups: rotation.onDisk,
      rotation: rotation.rotation,
    };
  });
}

/** Runs one backup (or, with dryRun, every check and no dump); throws a CliError on failure. */
export async function runBackup(context: BackupContext): Promise<BackupSummary> {
  const { settings, log } = context;
  const now = context.now ?? (() => new Date());
  const format = backupFormatOf(settings);
  // Read (and checked) before anything is touched: a bad key or file is a usage error.
  const recipients = settings.ageRecipients ? resolveRecipients(settings.ageRecipients) : [];
  const run: RunFacts = { started: now(), now, format, recipients, encrypted: recipients.length > 0 };
  for (const note of checkBackupDirectories(settings, !context.dryRun)) log.warn(note);
  const held: RunResources = { lock: undefined, session: undefined, temp: undefined, startPing: undefined };
  if (!context.dryRun && !context.lockHeld) {
    held.lock = acquireLock(settings.dir, 'backup-database');
    const was = held.lock.tookOverFrom;
    if (was)
      log.warn(`Took over a stale lock of ${was.command} (pid ${was.pid}, started ${was.started}): that run is gone`);
  }
  try {
    const pre = preflight(context, run, held);
    const summary = { format, recipients, leftoversRemoved: pre.leftoversRemoved };
    if (!pre.dump) {
      await pre.checks;
      return dryRunSummary(context, run, summary);
    }
    const dumped = await dumpAndFingerprint(context, held, pre, pre.dump);
    const { dump, fingerprint, durations } = dumped;
    verifyDump(log, run, dump, fingerprint);
    const databaseProperties = propertiesOf(dumped.properties, settings.dbName, log);
    const placed = placePhase(context, run, pre.dump.temp, { ...dumped, databaseProperties });
    held.temp = undefined;
    const rotation = rotatePhase(context, run, placed);
    recordSuccess(settings.dir, run, placed.name, dump, fingerprint, durations.total, rotation);
    await held.startPing;
    // Deploy's backup (the one with a tee) runs while the writers are stopped: the next scheduled
    // run's catch-up copies it off-site.
    const offsite = context.tee ? undefined : await copyOffsite({ settings, log, newFile: placed.name, now });
    await sendPing(settings.pingUrl, offsite?.ok === false ? 'fail' : 'success', log);
    log.info(
      offsite?.ok === false
        ? `Backup completed locally (${placed.name} is good); the off-site copy failed`
        : 'Backup completed successfully',
    );
    return {
      ...summary,
      dryRun: false,
      file: placed.name,
      path: placed.path,
      size: dump.bytes,
      sha256: dump.sha256,
      sequence: placed.manifest.sequence,
      fingerprint: fingerprint?.sha256 ?? null,
      durationsMs: durations,
      rotated: rotation.removed,
      rotationHeld: rotation.rotation.heldBecause,
      warnings: rotation.warnings,
      offsite,
    };
  } catch (error) {
    await recordFailure(context, run, held, error);
    throw error;
  } finally {
    held.lock?.release();
  }
}

/** The failure path: stop the session, remove the temp file, record and report the failure. */
async function recordFailure(context: BackupContext, run: RunFacts, held: RunResources, error: unknown): Promise<void> {
  const { settings, log } = context;
  held.session?.kill();
  if (held.temp) {
    try {
      unlinkSync(held.temp);
    } catch {
      // never created
    }
  }
  if (context.dryRun || error instanceof UsageError) return;
  const message = errorText(error);
  log.error(`Backup failed: ${message}`);
  try {
    updateStatus(settings.dir, (status) => {
      const last = {
        time: run.started.toISOString(),
        durationMs: run.now().getTime() - run.started.getTime(),
        error: message,
      };
      return { ...status, lastRun: { ...last, ok: false }, lastFailure: last };
    });
  } catch (statusError) {
    log.warn(`could not update status.json: ${errorText(statusError)}`);
  }
  await held.startPing;
  await sendPing(settings.pingUrl, 'fail', log);
}
