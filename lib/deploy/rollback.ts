// deploy-to-qnap --rollback: the previous slot becomes live again. The writes made since the
// switch are kept in a backup pinned out of rotation (the current writers stop and the database is
// fenced first, so it holds every one of them), and in the current slot, kept stopped; they are
// not restored into the previous slot, whose schema may be older.
// The previous slot is started under its slot names and must become healthy before any name
// moves: if it does not, it is stopped again and the current writers start again, and the state
// says so. The switch itself is the journalled one of switch.ts.
import { linkSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { runBackup } from '../backup/run.ts';
import { sidecarsOf } from '../store/backup-files.ts';
import { fsyncDir } from '../host/atomic-file.ts';
import {
  readDeployState,
  slotComposePath,
  writeDeployState,
  type DeployState,
  type DeploySummary,
  type Slot,
  type SlotContainer,
} from './state.ts';
import { LiveFence } from './fence.ts';
import { reconcileSwitch, switchSlots, type SwitchContext } from './switch.ts';
import { Docker } from '../host/docker.ts';
import { CliError, errorText } from '../errors.ts';
import { acquireLock } from '../host/lock.ts';
import { oneShotServices } from '../host/compose.ts';
import { Interruption } from '../restore/interruption.ts';
import type { Logger } from '../log.ts';
import type { Settings } from '../settings.ts';
import type { Shell } from '../host/shell.ts';

export interface RollbackOptions {
  settings: Settings;
  docker: string;
  $: Shell;
  log: Logger;
  healthTimeoutMs: number;
}

export interface RollbackResult {
  live: Slot;
  previous: Slot;
  /** The backup of the writes made since the switch, kept out of rotation. */
  pinnedBackup: string;
}

/** The folder (inside the backup dir) whose backups rotation never sees. */
export const pinnedDirName = 'pinned';

/** Hard-links a backup and its sidecars into `<backupDir>/pinned/`, out of rotation's reach; returns its path there. */
export function pinBackup(path: string, backupDir: string): string {
  const dir = join(backupDir, pinnedDirName);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { manifest, checksum } = sidecarsOf(path);
  for (const file of [path, manifest, checksum]) linkSync(file, join(dir, basename(file)));
  fsyncDir(dir);
  return join(dir, basename(path));
}

/** The slot's database container first, then the rest. */
function dbFirst(slot: Slot, settings: Settings): SlotContainer[] {
  return [...slot.containers].sort(
    (a, b) => Number(b.canonicalName === settings.container) - Number(a.canonicalName === settings.container),
  );
}

/**
 * The slot's one-shot containers (migrations, seeds: services its compose file gives no restart
 * policy), which ran when it was deployed. None when the file cannot be read.
 */
function oneShotContainers(slot: Slot, settings: Settings): string[] {
  let services: string[];
  try {
    services = oneShotServices(slotComposePath(settings.dir, slot.project));
  } catch {
    return [];
  }
  return slot.containers.filter((c) => services.includes(c.service)).map((c) => c.name);
}

/**
 * Starts a slot, its database first, and waits until all of it serves: its one-shot containers
 * (a migration) have exited 0 (a service without a restart policy may also be one that keeps
 * running, so each is started, as a deployment does).
 */
async function startSlot(docker: Docker, slot: Slot, settings: Settings, timeoutMs: number): Promise<void> {
  const [db, ...rest] = dbFirst(slot, settings);
  await docker.start([db!.name]);
  await docker.waitHealthy([db!.name], timeoutMs);
  await docker.start(rest.map((c) => c.name));
  await docker.waitHealthy(
    slot.containers.map((c) => c.name),
    timeoutMs,
    { oneShot: oneShotContainers(slot, settings).filter((name) => name !== db!.name) },
  );
}

/** Which of a slot's services an undone switch starts again: its database and the writers that ran. */
export const servedBefore = (slot: Slot, dbService: string, running: string[]) => (service: string) =>
  service === dbService || slot.containers.some((c) => c.service === service && running.includes(c.name));

/** Records a rollback that did not happen, and says why (exit 1). */
function rollbackFailed(
  settings: Settings,
  state: DeployState,
  summary: DeploySummary,
  message: string,
  advice: string,
): never {
  writeDeployState(settings.dir, {
    ...state,
    lastDeploy: { ...summary, ok: false, outcome: 'rollback failed', error: message },
  });
  throw new CliError(message, { advice });
}

/** What a rollback works with, found under the lock before anything changes. */
interface RollbackRun {
  options: RollbackOptions;
  docker: Docker;
  ctx: SwitchContext;
  state: DeployState;
  current: Slot;
  previous: Slot;
  dbService: string;
  currentDb: string;
  /** The current writers that run: stopped for the backup, started again if the rollback is not done. */
  writers: string[];
  started: number;
  summary: DeploySummary;
  fence: LiveFence | undefined;
  /** Fires on SIGINT, SIGTERM or SIGHUP (a lost SSH session): the rollback stops at its next safe point. */
  abort: AbortSignal | undefined;
}

async function prepareRollback(options: RollbackOptions): Promise<RollbackRun> {
  const { settings, log, $ } = options;
  const docker = new Docker(options.docker, $);
  const ctx: SwitchContext = { dir: settings.dir, docker: options.docker, $, log };
  await reconcileSwitch(ctx);
  const state = readDeployState(settings.dir);
  if (!state.live || !state.previous)
    throw new CliError('there is no previous slot to roll back to', {
      advice: 'A previous slot is kept by each A-B deployment; see deploy-to-qnap --status.',
    });
  const [current, previous] = [state.live, state.previous];
  const dbService = dbFirst(current, settings)[0]!.service;
  const allWriters = current.containers.filter((c) => c.service !== dbService).map((c) => c.name);
  const states = await docker.inspectMany(allWriters);
  return {
    options,
    docker,
    ctx,
    state,
    current,
    previous,
    dbService,
    currentDb: dbFirst(current, settings)[0]!.name,
    // Only those that run are stopped, and started again if the rollback is not done (a finished migration stays finished).
    writers: allWriters.filter((_, i) => states[i]!.running),
    started: Date.now(),
    summary: {
      time: new Date().toISOString(),
      ok: true,
      mode: 'rollback',
      backupUsed: null,
      backupAgeSeconds: null,
      fingerprint: null,
      downtimeMs: null,
      totalMs: 0,
      attempts: [],
    },
    fence: undefined,
    abort: undefined,
  };
}

/** The current slot serves again as it did: fence lifted, its writers started. */
async function serveAgain(run: RollbackRun): Promise<void> {
  const { log } = run.options;
  await run.fence
    ?.release()
    .catch((e: unknown) => log.error(`Could not lift the fence on ${run.currentDb}: ${errorText(e)}`));
  const names = [run.currentDb, ...run.writers];
  await run.docker
    .start(names)
    .catch((e: unknown) => log.error(`Could not start ${names.join(', ')}: ${errorText(e)}`));
}

/** Stops the previous slot again after it could not take over, and lets the current one serve. */
async function standDown(run: RollbackRun): Promise<void> {
  await run.docker
    .stop(run.previous.containers.map((c) => c.name))
    .catch((e: unknown) => run.options.log.error(`Could not stop ${run.previous.project}: ${errorText(e)}`));
  await serveAgain(run);
}

const failed = (run: RollbackRun, message: string, advice: string): never =>
  rollbackFailed(
    run.options.settings,
    run.state,
    { ...run.summary, totalMs: Date.now() - run.started },
    message,
    advice,
  );

/**
 * 1. The current writers stop and the database is fenced (fence.ts: no other session commits), so
 * the backup holds every write made since the switch; it is pinned out of rotation.
 */
async function backUpCurrentWrites(run: RollbackRun): Promise<string> {
  const { settings, log, $ } = run.options;
  log.info(`Stopping the current writers before the backup: ${run.writers.join(', ') || 'none'}`);
  await run.docker.stop(run.writers);
  try {
    run.fence = await LiveFence.raise(
      $,
      { docker: run.options.docker, container: run.currentDb, user: settings.dbUser, database: settings.dbName },
      log,
    );
    const backup = await runBackup({
      settings: { ...settings, container: run.currentDb },
      docker: run.options.docker,
      $,
      log,
      dryRun: false,
      lockHeld: true,
    });
    const pinned = pinBackup(backup.path!, settings.backupDir);
    run.summary.pinnedBackup = pinned;
    log.info(
      `Backed up the current live database before rolling back: ${backup.file}, pinned as ${pinned} (rotation keeps it; the rollback does not restore it into the previous slot)`,
    );
    return pinned;
  } catch (error) {
    await serveAgain(run);
    // A signal kills the backup's exec (pg-dump.ts): the signal is what stopped it.
    const why = run.abort?.aborted ? `interrupted by ${String(run.abort.reason)}` : errorText(error);
    return failed(
      run,
      `the backup before the rollback failed (${why}); nothing was switched`,
      `${run.current.project} serves again.`,
    );
  }
}

/** A safe point: after a signal, `undo` lets the current slot serve again and the rollback stops there (exit 1). */
async function stopIfInterrupted(run: RollbackRun, undo: (run: RollbackRun) => Promise<void>): Promise<void> {
  if (!run.abort?.aborted) return;
  await undo(run);
  failed(
    run,
    `interrupted by ${String(run.abort.reason)}; the rollback was not done`,
    `${run.current.project} serves again (its fence lifted, its writers started).`,
  );
}

/** 2. The previous slot must serve under its slot names before any name moves. */
async function startPrevious(run: RollbackRun, pinned: string): Promise<void> {
  const { settings, log, healthTimeoutMs } = run.options;
  const { previous, current } = run;
  try {
    log.info(`Starting the previous slot ${previous.project}: ${previous.containers.map((c) => c.name).join(', ')}`);
    await startSlot(run.docker, previous, settings, healthTimeoutMs);
  } catch (error) {
    log.error(`The previous slot did not become healthy: ${errorText(error)}; starting the current one again`);
    await standDown(run);
    const restarted = await run.docker
      .waitHealthy(
        current.containers.filter((c) => c.name === run.currentDb || run.writers.includes(c.name)).map((c) => c.name),
        healthTimeoutMs,
      )
      .then(
        () => 'serves again',
        (e: unknown) => `was started again but does not serve yet (${errorText(e)})`,
      );
    failed(
      run,
      `the previous slot ${previous.project} did not become healthy (${errorText(error)}); the rollback was not done and ${current.project} ${restarted}`,
      `The writes since the switch are also in ${pinned}. See docker logs of the previous slot's containers.`,
    );
  }
  // The fence ends with the current server, stopped with a fast shutdown (a smart one would wait for the fence's session).
  try {
    await run.docker.stopFast(run.currentDb);
  } catch (error) {
    await standDown(run);
    failed(
      run,
      `could not stop ${run.currentDb} for the switch (${errorText(error)}); the rollback was not done`,
      `${current.project} was started again. The writes since the switch are also in ${pinned}.`,
    );
  }
}

/** 3. The journalled switch: the current slot gives up the names and stops. */
async function switchBack(run: RollbackRun, pinned: string): Promise<RollbackResult> {
  const { current, previous, dbService, writers } = run;
  const switched = await switchSlots(
    { ...run.ctx, dbService },
    {
      kind: 'rollback',
      outgoing: current,
      incoming: previous,
      stateBefore: run.state,
      summary: { ...run.summary, totalMs: Date.now() - run.started },
      startOnUndo: servedBefore(current, dbService, writers),
      oneShot: oneShotContainers(previous, run.options.settings),
    },
  );
  writeDeployState(run.options.settings.dir, {
    live: switched.live,
    previous: switched.previous,
    lastDeploy: { ...switched.summary, outcome: 'rolled back' },
  });
  run.options.log.info(`Rolled back: ${switched.live.project} is live again; ${current.project} is stopped and kept`);
  return { live: switched.live, previous: switched.previous ?? current, pinnedBackup: pinned };
}

/** Makes the previous slot live again; see the top of this file. */
export async function rollbackDeployment(options: RollbackOptions): Promise<RollbackResult> {
  const lock = acquireLock(options.settings.dir, 'deploy-to-qnap --rollback');
  // Ctrl-C, SIGTERM or a lost SSH session must not end the run with the writers stopped and the
  // database fenced: it stops at the next safe point, and the journalled switch, once begun, ends.
  const interruption = new Interruption(options.log);
  try {
    const run = await prepareRollback(options);
    run.abort = interruption.abort;
    const pinned = await backUpCurrentWrites(run);
    await stopIfInterrupted(run, serveAgain);
    await startPrevious(run, pinned);
    await stopIfInterrupted(run, standDown);
    return await switchBack(run, pinned);
  } finally {
    interruption.uninstall();
    lock.release();
  }
}
