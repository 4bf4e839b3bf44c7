// The A-B deployment on the NAS, under the shared lock, as a plan: a list of named phases that
// --dry-run prints and the run executes (run-plan.ts), with one rollback for the whole flow.
// The new slot's database is staged beside the live one on storage of its own, a backup is
// restored into it and proven by its fingerprint, and only then do its services start and take
// over the names; until the switch, the live slot is never touched except for stopping (and, on
// any failure or signal, restarting) its writers and fencing its database.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { backupFormatOf, runBackup } from '../backup/run.ts';
import { backupStamp, listBackups, parseBackupName, provableBackups } from '../store/backup-files.ts';
import {
  compose,
  detectCompose,
  oneShotServices,
  readComposeServices,
  type ComposeCommand,
  type ComposeServiceInfo,
} from '../host/compose.ts';
import { copySlotSources, slotComposeFile, type SlotCopy } from './slot-compose.ts';
import { FenceSessions, LiveFence, verifyOwnCluster } from './fence.ts';
import { onlinePhases } from './online.ts';
import { checkOnline, reconcileReplication, Replication, type OnlineCheck } from './replication.ts';
import { createSocketVolume, onlineSlotYaml, sweepSocketVolumes } from './slot-online.ts';
import { baseProjectName, dormantRefusal, findDeployment, type FoundDeployment } from './live.ts';
import { servedBefore } from './rollback.ts';
import { alongside, runPhases, type Phase } from './run-plan.ts';
import { completionDependencies, waitCompleted } from './service-completion.ts';
import { refuseSharedStorage } from './shared-storage.ts';
import {
  readDeployState,
  writeDeployState,
  deployDirName,
  slotComposePath,
  type DeployState,
  type DeploySummary,
  type Slot,
  type SlotContainer,
} from './state.ts';
import { Docker } from '../host/docker.ts';
import { flushWrites } from '../host/flush-writes.ts';
import { CliError, UsageError, errorText } from '../errors.ts';
import { recordDatabaseProperties } from '../dump/database-properties.ts';
import { quoteIdent } from '../dump/fingerprint.ts';
import { reconcileSwitch, switchSlots, type SwitchContext } from './switch.ts';
import { startInterruptedStops } from './interrupted-stops.ts';
import { pruneImages, prunableImages, slotImages } from './image-prune.ts';
import {
  readStagingJournal,
  removeStagingJournal,
  type StagingJournal,
  stagedSlotFate,
  writeStagingJournal,
} from './staging-journal.ts';
import { acquireLock } from '../host/lock.ts';
import type { Logger } from '../log.ts';
import {
  createScratch,
  dropScratch,
  oneShotSql,
  restoreBackup,
  restoreWithFallback,
  scratchName,
  StreamLoad,
  type RestoreResult,
  type RestoreTarget,
} from '../restore/attempt.ts';
import type { Settings } from '../settings.ts';
import type { Shell } from '../host/shell.ts';
import { formatAge } from '../format.ts';

export { baseProjectName } from './live.ts';

export interface DeployOptions {
  settings: Settings;
  docker: string;
  $: Shell;
  log: Logger;
  /** The compose file on the NAS. */
  composeFile: string;
  /** The database service in it (the game's docker-compose.qnap.yml calls it `db`). */
  dbService: string;
  /** Stop the live writers before the fresh backup (zero loss); false: --no-freeze, as the old deploy script did. */
  freeze: boolean;
  acceptOlderBackup: boolean;
  /** Fill the new slot from a fresh dump under the freeze even when the live slot could be replicated online. */
  offline?: boolean;
  /** A deployment exists but does not run: restore the newest backup into a fresh one. */
  freshFromBackup?: boolean;
  healthTimeoutMs: number;
  /** Installs or refreshes the backup cron job (setup-backup-cron's library). */
  installCron: (log: Logger) => Promise<void>;
  /** age secret keys for encrypted backups (from the workstation over SSH stdin); memory only. */
  identities?: string[];
  /** Images the workstation built for the services with `build:` (service -> content tag). */
  serviceImages?: Record<string, string>;
  now?: () => Date;
}

export interface DeployResult extends DeploySummary {
  live: Slot;
  previous: Slot | undefined;
}

/** What discovery found and what the run has done so far: the facts every phase and the rollback read. */
interface DeployRun {
  options: DeployOptions;
  docker: Docker;
  command: ComposeCommand;
  state: DeployState;
  mode: 'first' | 'ab' | 'fresh';
  /** The slot that gives up the names at the switch: the live one, or a stopped one (--fresh-from-backup). */
  old: Slot | undefined;
  /** The running live database container (A-B only). */
  liveDb: string | undefined;
  slotFile: string;
  slotYaml: string;
  storageNotes: string[];
  /** Every other change of the slot's file to the operator's (ports, build -> image, bind mounts), with its reason. */
  deviations: string[];
  /** The slot's copies of the relative bind mounts, made before it starts. */
  copies: SlotCopy[];
  names: ComposeServiceInfo[];
  /** Container names of the new slot's one-shot services (exit 0 is done). */
  oneShot: string[];
  next: Slot;
  newDb: string;
  started: number;
  abort: AbortSignal | undefined;
  progress: {
    slotCreated: boolean;
    /** Folders the slot's volumes bind that this run created. */
    folders: string[];
    /** The new server turned out to be the live cluster: its storage is the live one's, keep it. */
    sameCluster: boolean;
    stoppedWriters: string[];
    fence: LiveFence | undefined;
    liveDbStopped: boolean;
    writersStoppedAt: number | undefined;
    writersUpAt: number | undefined;
  };
  stream: { into: string; load: StreamLoad | undefined; fresh: string | undefined } | undefined;
  /** How the new slot is filled (A-B): online by logical replication, or not and why. */
  online: OnlineCheck | undefined;
  replication: Replication | undefined;
  proof: { winner: RestoreResult; attempts: RestoreResult[]; ageSeconds: number | null } | undefined;
  result: DeployResult | undefined;
}

const writersOf = (slot: Slot, dbService: string) => slot.containers.filter((c) => c.service !== dbService);
const newTarget = (run: DeployRun): RestoreTarget => ({
  docker: run.options.docker,
  container: run.newDb,
  user: run.options.settings.dbUser,
  database: run.options.settings.dbName,
});
const liveTarget = (run: DeployRun): RestoreTarget => ({ ...newTarget(run), container: run.liveDb! });

/** Starts containers again (best effort on failure paths: logs what it could not do); whether they started. */
async function restart(docker: Docker, names: string[], log: Logger): Promise<boolean> {
  if (!names.length) return true;
  try {
    await docker.start(names);
    log.info(`Restarted the live writers: ${names.join(', ')}`);
    return true;
  } catch (error) {
    log.error(
      `Could not restart ${names.join(', ')}: ${errorText(error)} — start them by hand: docker start ${names.join(' ')}`,
    );
    return false;
  }
}

/** Removes a slot this tool created, with its volumes (not when they are the live ones) and its folders. */
async function removeSlot(
  $: Shell,
  command: ComposeCommand,
  slot: { project: string; file: string; folders?: string[] },
  dir: string,
  log: Logger,
  keepStorage = false,
): Promise<boolean> {
  try {
    await compose($, command, slot.project, slot.file, dir, [
      'down',
      ...(keepStorage ? [] : ['-v']),
      '--remove-orphans',
    ]);
    for (const folder of keepStorage ? [] : (slot.folders ?? [])) rmSync(folder, { recursive: true, force: true });
    log.info(
      `Removed slot ${slot.project}${keepStorage ? ' (its storage is the live one: kept)' : ' and its volumes'}`,
    );
    return true;
  } catch (error) {
    log.error(`Could not remove slot ${slot.project}: ${errorText(error)}`);
    return false;
  }
}

/** The slot as the staging journal records it, from what this run has made of it so far. */
const stagingOf = (run: DeployRun): StagingJournal => ({
  project: run.next.project,
  file: run.slotFile,
  containers: run.next.containers,
  folders: run.progress.folders,
  keepStorage: run.progress.sameCluster,
  stoppedWriters: run.progress.stoppedWriters,
  ...(run.progress.liveDbStopped && run.liveDb ? { stoppedDatabase: run.liveDb } : {}),
});

/**
 * The reconciliation at the start of a deployment: a slot a killed run was building (its staging
 * journal) is removed with its volumes and folders, unless it serves or is the one kept for --rollback.
 */
async function reconcileStaging(options: DeployOptions, command: ComposeCommand, docker: Docker): Promise<void> {
  const { settings, log } = options;
  const journal = readStagingJournal(settings.dir);
  if (!journal) return;
  // The game first: what the killed run had stopped of the live slot runs again before anything is removed.
  await startInterruptedStops({ dir: settings.dir, docker: options.docker, $: options.$, log }, journal);
  const members = await docker.projectContainers(journal.project);
  const fate = stagedSlotFate(journal, readDeployState(settings.dir), new Map(members.map((m) => [m.name, m.project])));
  if (fate === 'keep') {
    log.info(`The staging journal names ${journal.project}, which serves or is kept for --rollback: left as it is`);
  } else {
    log.warn(`Removing slot ${journal.project}, which an interrupted deployment was building (deploy/staging.json)`);
    const file = existsSync(journal.file) ? journal.file : undefined;
    if (!file)
      throw new CliError(`the compose file ${journal.file} of the interrupted slot ${journal.project} is gone`, {
        advice: `Remove its containers and volumes by hand (docker ps -a --filter label=com.docker.compose.project=${journal.project}), its folders ${journal.folders.join(', ') || '(none)'}, then deploy/staging.json.`,
      });
    if (!(await removeSlot(options.$, command, { ...journal, file }, settings.dir, log, journal.keepStorage)))
      throw new CliError(`could not remove the slot ${journal.project} of an interrupted deployment`, {
        advice: 'See the error above; the next deployment tries again.',
      });
    await sweepSocketVolumes(options.$, options.docker, baseProjectName(settings.dir));
  }
  removeStagingJournal(settings.dir);
}

/**
 * Starts created containers in Compose's order, each once the services it needs with
 * `condition: service_healthy` are healthy and those with `service_completed_successfully`
 * have exited 0 (a plain `docker start` waits for neither).
 */
async function startInOrder(
  docker: Docker,
  containers: SlotContainer[],
  services: ComposeServiceInfo[],
  completedFirst: Map<string, string[]>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  const nameOf = new Map(containers.map((c) => [c.service, c.name]));
  const started: string[] = [];
  for (const { service, dependsOn } of services) {
    const name = nameOf.get(service);
    if (!name) continue;
    const healthyFirst = dependsOn
      .filter((d) => d.healthy && started.includes(nameOf.get(d.service)!))
      .map((d) => nameOf.get(d.service)!);
    if (healthyFirst.length) await docker.waitHealthy(healthyFirst, timeoutMs, { signal, probe: true });
    const doneFirst = (completedFirst.get(service) ?? []).map((d) => nameOf.get(d)!).filter((n) => started.includes(n));
    if (doneFirst.length) await waitCompleted(docker, doneFirst, timeoutMs, signal);
    await docker.start([name]);
    started.push(name);
  }
}
/** What was found refused before anything starts (exit 2): a dormant deployment, or a flag that does not fit. */
function refuseUnfit(found: FoundDeployment, options: DeployOptions): void {
  const { settings } = options;
  if (found.kind === 'dormant' && !options.freshFromBackup) throw dormantRefusal(found, settings, options.composeFile);
  if (found.kind === 'dormant' && !found.backups.length)
    throw new UsageError(
      `--fresh-from-backup: there is no backup in ${settings.backupDir} to restore`,
      'Copy the newest backup (with its .json and .sha256) there, or start the stopped deployment.',
    );
  if (found.kind !== 'dormant' && options.freshFromBackup) {
    throw new UsageError(
      `--fresh-from-backup is for a deployment that exists but does not run; ${found.kind === 'live' ? `'${found.dbContainer}' is running` : 'nothing of one exists here'}`,
      'Deploy without --fresh-from-backup.',
    );
  }
  // Backups are encrypted when recipients are set: one cannot be restored into the new slot
  // without the key, so say so before anything is started or stopped (exit 2).
  if (found.kind !== 'none' && settings.ageRecipients && !options.identities?.length) {
    throw new UsageError(
      'PLANETARION_AGE_RECIPIENTS is set, so backups are encrypted, and no identity was given to restore them into the new slot',
      'On the workstation pass --identity FILE (or set PLANETARION_AGE_IDENTITY): deploy-to-qnap sends it over the SSH session, never to the NAS disk.',
    );
  }
}

/** The new slot's compose file, folders, copies and containers, made from the operator's file; writes nothing. */
function planSlot(
  options: DeployOptions,
  names: ReturnType<typeof readComposeServices>,
  slotId: string,
  project: string,
  online: DeployRun['online'],
) {
  const { settings } = options;
  const slotDir = join(settings.dir, deployDirName, project);
  const slot = slotComposeFile(options.composeFile, {
    dbService: options.dbService,
    slotId,
    names,
    projectDir: settings.dir,
    slotDir,
    images: options.serviceImages,
  });
  const { yaml, notes } = onlineSlotYaml(
    slot.yaml,
    options.dbService,
    project,
    online?.online ? online.socketVolume : undefined,
  );
  const containers: SlotContainer[] = names.map(({ service, canonicalName }) => ({
    service,
    canonicalName,
    name: `${canonicalName}-${slotId}`,
  }));
  const oneShot = oneShotServices(options.composeFile);
  return {
    slotFile: slotComposePath(settings.dir, project),
    slotYaml: yaml,
    storageNotes: [...slot.warnings, ...notes],
    deviations: slot.deviations,
    copies: slot.copies,
    folders: slot.copies.length ? [...slot.folders, slotDir] : slot.folders,
    containers,
    oneShot: containers
      .filter((c) => oneShot.includes(c.service) && c.service !== options.dbService)
      .map((c) => c.name),
  };
}

/** Finds what runs and reads the compose file; changes nothing. Refusals (exit 2) come from here, before anything starts. */
async function prepareRun(options: DeployOptions): Promise<DeployRun> {
  const { settings, $ } = options;
  const docker = new Docker(options.docker, $);
  const command = await detectCompose($, options.docker);
  const state = readDeployState(settings.dir);
  const found = await findDeployment(docker, settings, options.dbService, state);
  refuseUnfit(found, options);
  const mode = found.kind === 'live' ? 'ab' : found.kind === 'dormant' ? 'fresh' : 'first';
  const now = options.now ?? (() => new Date());
  const slotId = `s${backupStamp(now())}`;
  const project = `${baseProjectName(settings.dir)}-${slotId}`;
  const names = readComposeServices(
    options.composeFile,
    options.dbService,
    settings.container,
    baseProjectName(settings.dir),
  );
  const liveDb = found.kind === 'live' ? found.dbContainer : undefined;
  const live: RestoreTarget = {
    docker: options.docker,
    container: liveDb ?? settings.container,
    user: settings.dbUser,
    database: settings.dbName,
  };
  const online = !liveDb
    ? undefined
    : options.offline
      ? { online: false as const, reason: '--offline' }
      : !options.freeze
        ? { online: false as const, reason: '--no-freeze' }
        : await checkOnline($, live);
  const { folders, containers, ...slot } = planSlot(options, names, slotId, project, online);
  return {
    options,
    docker,
    command,
    state,
    mode,
    old: found.kind === 'live' || found.kind === 'dormant' ? found.slot : undefined,
    liveDb,
    ...slot,
    names,
    next: {
      project,
      slotId,
      managed: true,
      containers,
      since: now().toISOString(),
      ...(folders.length ? { folders } : {}),
    },
    newDb: `${settings.container}-${slotId}`,
    started: Date.now(),
    abort: undefined,
    progress: {
      slotCreated: false,
      folders: [],
      sameCluster: false,
      stoppedWriters: [],
      fence: undefined,
      liveDbStopped: false,
      writersStoppedAt: undefined,
      writersUpAt: undefined,
    },
    stream: undefined,
    online,
    replication: online?.online
      ? new Replication(
          $,
          live,
          { ...live, container: `${settings.container}-${slotId}` },
          slotId,
          options.log,
          settings.dir,
          settings.replicationStall,
        )
      : undefined,
    proof: undefined,
    result: undefined,
  };
}

/** The compose command line of the slot, for the plan. */
const upCommand = (run: DeployRun) => `${run.command.join(' ')} -p ${run.next.project} -f ${run.slotFile} up -d`;
const liveWriterNames = (run: DeployRun) =>
  run.old ? writersOf(run.old, run.options.dbService).map((c) => c.name) : [];

/** Writes the slot's compose file (0600) and makes its own folders (0700); from here on the rollback removes the slot. */
function createSlotFiles(run: DeployRun): void {
  const dir = run.options.settings.dir;
  mkdirSync(dirname(run.slotFile), { recursive: true, mode: 0o700 });
  // Journalled before anything of the slot exists: a run killed from here on leaves its record.
  writeStagingJournal(dir, stagingOf(run));
  writeFileSync(run.slotFile, run.slotYaml, { mode: 0o600 });
  run.progress.slotCreated = true;
  for (const folder of run.next.folders ?? []) {
    try {
      // Not recursive: the share it sits on must exist, and a folder already there is not the slot's.
      mkdirSync(folder, { mode: 0o700 });
    } catch (error) {
      throw new CliError(
        `cannot create the new slot's data folder ${folder}: ${(error as NodeJS.ErrnoException).code ?? errorText(error)}`,
        {
          advice:
            'It sits beside the folder the compose file binds (driver_opts device); check that share and that nothing is in the way.',
        },
      );
    }
    run.progress.folders.push(folder);
    writeStagingJournal(dir, stagingOf(run));
  }
  for (const note of run.storageNotes) run.options.log.warn(note);
  copySlotSources(run.copies);
  for (const note of run.deviations) run.options.log.info(`Deviation: ${note}`);
}

/** First deployment: the whole stack up, healthy. */
function stageStackPhase(run: DeployRun): Phase {
  const { options } = run;
  return {
    name: 'stage',
    describe: `${upCommand(run)}   (services: ${run.names.map((n) => n.service).join(', ')}); wait until every container is healthy (at most ${Math.round(options.healthTimeoutMs / 1000)} s)`,
    run: async () => {
      createSlotFiles(run);
      await createSocketVolume(options.$, options.docker, run.slotYaml, run.next.project);
      try {
        await compose(options.$, run.command, run.next.project, run.slotFile, options.settings.dir, ['up', '-d']);
        await run.docker.waitHealthy(
          run.next.containers.map((c) => c.name),
          options.healthTimeoutMs,
          { oneShot: run.oneShot, signal: run.abort },
        );
      } catch (error) {
        throw new CliError(`the new stack did not become healthy: ${errorText(error)}`, { cause: error });
      }
    },
  };
}

/** A-B and fresh: the new database on its own storage, proven to be another cluster, emptied; its other services created. */
function stageDatabasePhase(run: DeployRun): Phase {
  const { options } = run;
  const { settings } = options;
  const streams = run.mode === 'ab' && options.freeze && !run.replication;
  return {
    name: 'stage',
    describe: [
      `${upCommand(run)} ${options.dbService}   (the new database, as ${run.newDb}, on storage of its own${run.next.folders ? `: creates ${run.next.folders.join(', ')} (0700)` : ''})`,
      run.liveDb
        ? `before it starts, refuse (exit 2) a writable mount of the storage that holds ${run.liveDb}'s data dir; once it runs, compare its system_identifier with ${run.liveDb}'s before any statement (equal: abort, touch nothing)`
        : undefined,
      `create its other services without starting them${streams ? '; create the database the fresh backup streams into' : ''}`,
    ]
      .filter(Boolean)
      .join('; '),
    run: async () => {
      createSlotFiles(run);
      await createSocketVolume(options.$, options.docker, run.slotYaml, run.next.project);
      const target = newTarget(run);
      // Created first and inspected: what Docker really mounts must not be the live data dir.
      await compose(options.$, run.command, run.next.project, run.slotFile, settings.dir, [
        'up',
        '--no-start',
        options.dbService,
      ]);
      if (run.liveDb) await refuseSharedStorage(options.$, liveTarget(run), run.newDb);
      try {
        await compose(options.$, run.command, run.next.project, run.slotFile, settings.dir, [
          'up',
          '-d',
          options.dbService,
        ]);
        await run.docker.waitHealthy([run.newDb], options.healthTimeoutMs, { signal: run.abort });
      } catch (error) {
        throw new CliError(`the new database did not start: ${errorText(error)}`, {
          advice: 'The live deployment was not touched.',
        });
      }
      if (run.liveDb) {
        await verifyOwnCluster(options.$, liveTarget(run), target).catch((error: unknown) => {
          run.progress.sameCluster = /system_identifier/.test(errorText(error));
          if (run.progress.sameCluster) writeStagingJournal(settings.dir, stagingOf(run));
          throw error;
        });
      }
      // Prepared while the writers still serve: the new slot's own empty database goes (the
      // restored one takes its name), its writers are created but not started (starting them
      // after the proof is then a `docker start`, not a Compose run), and the fresh dump gets
      // an empty database to stream into.
      const sql = oneShotSql(options.$, target);
      await sql(`DROP DATABASE IF EXISTS ${quoteIdent(settings.dbName)} WITH (FORCE);`);
      const writers = writersOf(run.next, options.dbService);
      if (writers.length)
        await compose(options.$, run.command, run.next.project, run.slotFile, settings.dir, [
          'up',
          '--no-start',
          '--no-deps',
          ...writers.map((c) => c.service),
        ]);
      if (streams) {
        run.stream = {
          into: scratchName(target, 'stream', backupStamp((options.now ?? (() => new Date()))())),
          load: undefined,
          fresh: undefined,
        };
        // Created like the live database (encoding, locale, owner): those cannot change after the load.
        const properties = await recordDatabaseProperties(
          options.$,
          { ...target, container: settings.container },
          options.log,
        );
        await createScratch(sql, run.stream.into, properties);
      }
    },
  };
}

/** Stops the live writers that run, recording them for the rollback (only those are restarted). */
async function stopLiveWriters(run: DeployRun): Promise<void> {
  const writers = liveWriterNames(run);
  const states = await run.docker.inspectMany(writers);
  const running = writers.filter((_, i) => states[i]!.running);
  run.options.log.info(`Stopping the live writers: ${running.join(', ') || 'none'}`);
  run.progress.stoppedWriters = running;
  // Journalled before they stop: a run killed outright from here on leaves them for the next run to start.
  writeStagingJournal(run.options.settings.dir, stagingOf(run));
  run.progress.writersStoppedAt = Date.now();
  await run.docker.stop(running);
}

/** Stops the live writers and raises the fence, both recorded for the rollback; the fence's sessions connect while the writers stop (each connection after it is downtime). */
async function stopWritersAndFence(run: DeployRun): Promise<LiveFence> {
  const sessions = FenceSessions.open(liveTarget(run));
  try {
    await stopLiveWriters(run);
  } catch (error) {
    await sessions.close();
    throw error;
  }
  run.progress.fence = await LiveFence.raise(run.options.$, liveTarget(run), run.options.log, undefined, sessions);
  return run.progress.fence;
}

/** A-B with freeze: the writers stop, the live database is fenced, and its fresh dump streams into the new slot. */
function freezePhase(run: DeployRun): Phase {
  const { options } = run;
  const { settings, log } = options;
  return {
    name: 'freeze',
    describe: `stop the live writers (${liveWriterNames(run).join(', ') || 'none'}) and take a fresh backup of ${run.liveDb} once it is fenced (other sessions of '${settings.dbName}' ended, its tables locked against writes until it stops), restoring it into ${run.newDb} as it is written`,
    run: async () => {
      await stopWritersAndFence(run);
      const stream = run.stream!;
      const load = new StreamLoad(newTarget(run), stream.into, backupFormatOf(settings));
      stream.load = load;
      try {
        // The backup is of the database that runs, whatever its container is called (an old script's `<project>_db_1`).
        const backup = await runBackup({
          settings: { ...settings, container: run.liveDb! },
          docker: options.docker,
          $: options.$,
          log,
          dryRun: false,
          lockHeld: true,
          tee: (chunk) => load.write(chunk),
        });
        stream.fresh = backup.path!;
      } catch (error) {
        await load.abort();
        stream.load = undefined;
        if (!options.acceptOlderBackup) {
          throw new CliError(`the fresh backup of the live database failed: ${errorText(error)}`, {
            advice:
              'The live deployment is serving as before. To deploy from the newest older backup that restores (losing the data written since), add --accept-older-backup.',
          });
        }
        log.error(
          `The fresh backup of the live database failed: ${errorText(error)}; trying the existing backups (--accept-older-backup)`,
        );
        await dropScratch(oneShotSql(options.$, newTarget(run)), stream.into, log);
      }
    },
  };
}

/** What the prove phase restores, newest first. */
function candidatesOf(run: DeployRun): string[] {
  const fresh = run.stream?.fresh;
  // The old scripts' backups carry no proof: never a deployment's.
  const existing = provableBackups(listBackups(run.options.settings.backupDir)).map((b) => b.path);
  return fresh ? [fresh, ...existing.filter((c) => c !== fresh)] : existing;
}

/** Restores into the new slot and proves the fingerprint: the streamed fresh backup, or the newest existing ones. */
function provePhase(run: DeployRun): Phase {
  const { options } = run;
  const { settings, log } = options;
  const freeze = run.mode === 'ab' && options.freeze;
  const older =
    provableBackups(listBackups(settings.backupDir))
      .map((b) => b.name)
      .join(', ') || "(no existing backups made by backup-database; the old scripts' carry no proof)";
  return {
    name: 'prove',
    describe: freeze
      ? `prove the restored fingerprint of the fresh backup; it fails: abort at once${options.acceptOlderBackup ? `; with --accept-older-backup restore and prove the older ones instead: ${older}` : ' (older backups only with --accept-older-backup)'}`
      : `restore and prove the newest existing backup, falling back to older ones: ${older}`,
    run: async () => {
      const restoreOptions = {
        target: newTarget(run),
        $: options.$,
        log,
        logDir: settings.logDir,
        identities: options.identities,
      };
      const candidates = candidatesOf(run);
      if (!candidates.length)
        throw new CliError(
          "there is no backup made by backup-database to restore into the new slot (the old scripts' backups carry no proof)",
          {
            advice:
              'The live deployment is serving as before. Check the backup log, or run backup-database on the NAS first.',
          },
        );
      const fresh = run.stream?.fresh;
      // The fresh one already streamed in (a failure there is its attempt: the same bytes from
      // the file would fail the same way).
      const streamed =
        fresh && run.stream?.load ? [await restoreBackup(fresh, restoreOptions, 1, run.stream.load)] : [];
      if (freeze && streamed[0] && !streamed[0].ok && !options.acceptOlderBackup) {
        throw new CliError(`the fresh backup could not be restored into the new slot: ${streamed[0].reason}`, {
          advice: `The live deployment is serving as before. Diagnostics: ${streamed[0].diagnostics}. To deploy from the newest older backup that restores (losing the data written since), add --accept-older-backup.`,
        });
      }
      const { winner, attempts } = streamed[0]?.ok
        ? { winner: streamed[0], attempts: streamed }
        : await restoreWithFallback(streamed.length ? candidates.slice(1) : candidates, restoreOptions, streamed);
      if (!winner) {
        throw new CliError(
          `every restore into the new slot failed (${attempts.length} attempt(s)); the deployment was aborted`,
          {
            advice: `The live deployment is serving as before. Diagnostics: ${attempts.map((a) => a.diagnostics).join(', ')}`,
          },
        );
      }
      const winnerTime = parseBackupName(basename(winner.file))?.time;
      const ageSeconds = winnerTime ? Math.round((Date.now() - winnerTime.getTime()) / 1000) : null;
      if (freeze && winner.file !== fresh) {
        const lost = attempts.filter((a) => !a.ok).map((a) => `${basename(a.file)}: ${a.reason}`);
        log.warn(
          `Deploying with an older backup, ${basename(winner.file)} (${ageSeconds === null ? 'unknown age' : `${formatAge(ageSeconds)} old`}): ${lost.join('; ')}`,
        );
      }
      run.proof = { winner, attempts, ageSeconds };
    },
  };
}

/** Starts the new slot's services in Compose's order and waits for their health; in --no-freeze mode the live writers stop only now. */
function startPhase(run: DeployRun): Phase {
  const { options } = run;
  const lateStop = run.mode === 'ab' && !options.freeze;
  return {
    name: 'start',
    describe: `${lateStop ? `stop the live writers (${liveWriterNames(run).join(', ') || 'none'}) now (--no-freeze); ` : ''}docker start the new services in Compose's order and wait for their health checks (one-shot services that exit 0 are done)`,
    run: async () => {
      if (lateStop) await stopLiveWriters(run);
      try {
        await startInOrder(
          run.docker,
          writersOf(run.next, options.dbService),
          run.names,
          completionDependencies(options.composeFile),
          options.healthTimeoutMs,
          run.abort,
        );
        await run.docker.waitHealthy(
          run.next.containers.map((c) => c.name),
          options.healthTimeoutMs,
          // The writers are down: each service's own check runs at once, not `interval` after its start.
          { oneShot: run.oneShot, signal: run.abort, probe: true },
        );
      } catch (error) {
        if (run.abort?.aborted) throw error;
        throw new CliError(`the new slot did not become healthy (${errorText(error)}); rolled back to the live slot`, {
          advice: 'The live deployment is serving again.',
        });
      }
      run.progress.writersUpAt = Date.now();
    },
  };
}

/**
 * The last step the rollback can undo: the live database stops with a fast shutdown, which ends
 * the fence's session with every other one and rolls back what a blocked client had not
 * committed (a plain `docker stop` is a smart shutdown for images without STOPSIGNAL SIGINT, and
 * would wait for the fence's session until Docker kills the server).
 */
function releasePhase(run: DeployRun): Phase {
  return {
    name: 'release',
    describe: `stop ${run.liveDb} with a fast shutdown (SIGINT): the fence ends with it, nothing of it stays set`,
    run: async () => {
      run.progress.liveDbStopped = true;
      writeStagingJournal(run.options.settings.dir, stagingOf(run));
      await run.docker.stopFast(run.liveDb!);
    },
  };
}

/** The run's summary as recorded with the switch. */
function deploySummary(run: DeployRun): DeploySummary {
  const { progress, proof, options } = run;
  return {
    time: (options.now ?? (() => new Date()))().toISOString(),
    ok: true,
    mode: run.mode,
    backupUsed: proof ? basename(proof.winner.file) : null,
    backupAgeSeconds: proof ? proof.ageSeconds : null,
    fingerprint: proof ? proof.winner.fingerprint : (run.replication?.fingerprint ?? null),
    downtimeMs:
      progress.writersStoppedAt === undefined || progress.writersUpAt === undefined
        ? null
        : progress.writersUpAt - progress.writersStoppedAt,
    totalMs: Date.now() - run.started,
    attempts: (proof?.attempts ?? []).map((a) => ({
      file: basename(a.file),
      ok: a.ok,
      reason: a.reason,
      diagnostics: a.diagnostics,
    })),
  };
}

/** The switch, journalled (switch.ts): a crash between two renames is finished or undone by the next run. */
function switchPhase(run: DeployRun): Phase {
  const canonical = run.next.containers.map((c) => c.canonicalName).join(', ');
  return {
    name: 'switch',
    committed: true,
    describe: run.old
      ? `switch (journalled in deploy/): ${run.old.containers.map((c) => c.name).join(', ')} stop and take the suffix -${run.old.slotId}; the new containers take the names ${canonical}`
      : `switch (journalled in deploy/): rename the containers to ${canonical}`,
    run: async () => {
      const { options } = run;
      const summary = deploySummary(run);
      // A first deployment's renames are journalled too: a run killed between them is finished (or undone) by the next one.
      const switched = await switchSlots(switchContextOf(options), {
        kind: 'deploy',
        outgoing: run.old,
        incoming: run.next,
        stateBefore: run.state,
        summary,
        oneShot: run.oneShot,
        // An undo starts again only what served before: nothing of a stopped deployment (--fresh-from-backup).
        startOnUndo:
          run.old && run.mode === 'ab'
            ? servedBefore(run.old, options.dbService, run.progress.stoppedWriters)
            : () => false,
      });
      // Live now (or, if the switch was undone, left to the next run's reconciliation).
      if (switched.live.project === run.next.project) removeStagingJournal(options.settings.dir);
      run.old = switched.previous;
      run.next = switched.live;
      run.result = { ...switched.summary, live: switched.live, previous: switched.previous };
    },
  };
}

/** After the switch: the slot before the previous one goes, the cron job is refreshed, the state recorded; failures only warn. */
function finishPhase(run: DeployRun): Phase {
  const { options } = run;
  const { settings } = options;
  const stale =
    run.mode === 'ab' && run.state.previous?.managed && run.state.previous.project !== run.old?.project
      ? run.state.previous
      : undefined;
  return {
    name: 'finish',
    committed: true,
    describe: `${stale ? `remove the slot before the previous one (${stale.project}) with its volumes, and the images it ran that neither kept slot runs; ` : ''}${run.old ? 'refresh' : 'install'} the backup cron job; record deploy/state.json (a failure here only warns: the switch stands)`,
    run: async () => {
      const warnings: string[] = [];
      const step = async (name: string, fn: () => Promise<void>) => {
        try {
          await fn();
        } catch (error) {
          warnings.push(`${name} failed after the switch: ${errorText(error)}`);
          options.log.warn(warnings[warnings.length - 1]!);
        }
      };
      const slotFile = (project: string) => slotComposePath(settings.dir, project);
      if (stale)
        await step('removing the older previous slot', async () => {
          const images = slotImages(slotFile(stale.project));
          const removed = await removeSlot(
            options.$,
            run.command,
            { ...stale, file: slotFile(stale.project) },
            settings.dir,
            options.log,
          );
          const kept = [run.next, run.old].flatMap((slot) => (slot ? slotImages(slotFile(slot.project)) : []));
          if (removed) await pruneImages(options.$, options.docker, prunableImages(images, kept), options.log);
        });
      await step('removing unused socket volumes', () =>
        sweepSocketVolumes(options.$, options.docker, baseProjectName(settings.dir)),
      );
      await step('installing the backup cron job', () => options.installCron(options.log));
      const { live, previous, ...switched } = run.result!;
      const summary: DeploySummary = {
        ...switched,
        outcome: 'switched',
        totalMs: Date.now() - run.started,
        ...(warnings.length ? { warnings } : {}),
      };
      await step('recording deploy/state.json', async () =>
        writeDeployState(settings.dir, { live, previous, lastDeploy: summary }),
      );
      run.result = { ...summary, live, previous };
    },
  };
}

/** The plan: the phases of this deployment, in order. The dry run prints them; the run executes them. */
function deployPhases(run: DeployRun): Phase[] {
  if (run.mode === 'first') return [stageStackPhase(run), switchPhase(run), finishPhase(run)];
  const frozen = run.mode === 'ab' && run.options.freeze;
  if (run.replication) {
    // Online: the subscription is dropped while the new services start (it is disabled and the
    // frozen live database sends nothing more; each is a few docker round trips of waiting), and
    // before the live database stops.
    const online = onlinePhases(onlineRunOf(run, run.replication));
    return [
      stageDatabasePhase(run),
      online.replicate,
      online.freeze,
      online.prove,
      alongside(startPhase(run), online.detach),
      releasePhase(run),
      switchPhase(run),
      finishPhase(run),
    ];
  }
  return [
    stageDatabasePhase(run),
    ...(frozen ? [freezePhase(run)] : []),
    provePhase(run),
    startPhase(run),
    ...(run.liveDb ? [releasePhase(run)] : []),
    switchPhase(run),
    finishPhase(run),
  ];
}

/** What the online phases (online.ts) need of the run: the writers' stop and the fence stay recorded here for the rollback. */
function onlineRunOf(run: DeployRun, replication: Replication) {
  const { options } = run;
  return {
    replication,
    liveDb: run.liveDb!,
    newDb: run.newDb,
    writers: liveWriterNames(run),
    database: options.settings.dbName,
    fingerprintExclude: options.settings.fingerprintExclude,
    abort: () => run.abort,
    freeze: () => stopWritersAndFence(run),
    flushWrites: (signal: AbortSignal | undefined) => flushWrites(options.log, { signal }),
  };
}

/** The one rollback of the flow: undoes what the progress says was done, in the order that gets the game back first. */
async function rollBack(run: DeployRun): Promise<void> {
  const { progress, docker, options } = run;
  const { log, settings } = options;
  let started = true;
  if (progress.liveDbStopped && run.liveDb) {
    started = await restart(docker, [run.liveDb], log);
    await docker
      .waitHealthy([run.liveDb], options.healthTimeoutMs)
      .catch((error: unknown) => log.error(`${run.liveDb} did not become healthy again: ${errorText(error)}`));
  }
  if (progress.fence) {
    await progress.fence.release().then(
      () => log.info(`Fence lifted: '${settings.dbName}' takes writes again`),
      (error: unknown) =>
        log.error(
          `Could not lift the fence: ${errorText(error)} — run: docker exec ${run.liveDb} psql -U ${settings.dbUser} -d postgres -c 'ALTER DATABASE ${quoteIdent(settings.dbName)} WITH ALLOW_CONNECTIONS true'`,
        ),
    );
  }
  // The new writers first: they may hold the ports the live ones publish.
  if (progress.slotCreated)
    await docker.stop(writersOf(run.next, options.dbService).map((c) => c.name)).catch(() => {});
  started = (await restart(docker, progress.stoppedWriters, log)) && started;
  // Started again: a journal the slot's removal leaves behind names no stops (else the next run tries).
  if (started && progress.slotCreated && (progress.stoppedWriters.length || progress.liveDbStopped))
    writeStagingJournal(settings.dir, { ...stagingOf(run), stoppedWriters: [], stoppedDatabase: undefined });
  // After the writers (the game first): the publication goes before the keyless tables' identity is put back.
  await run.replication?.abandon();
  await run.stream?.load?.abort().catch(() => {});
  // On the live data files: killed, so not even its shutdown checkpoint is written to them.
  if (progress.sameCluster) await options.$({ timeout: '30s', nothrow: true })`${options.docker} kill ${run.newDb}`;
  // The journal stays when the slot could not be removed: the next deployment tries again.
  if (
    progress.slotCreated &&
    (await removeSlot(
      options.$,
      run.command,
      { ...run.next, folders: progress.folders, file: run.slotFile },
      settings.dir,
      log,
      progress.sameCluster,
    ))
  )
    removeStagingJournal(settings.dir);
  if (progress.slotCreated) await sweepSocketVolumes(options.$, options.docker, baseProjectName(settings.dir));
}

/** What the journalled switch needs of the deployment's options. */
const switchContextOf = (
  options: Pick<DeployOptions, 'settings' | 'docker' | '$' | 'log' | 'dbService'>,
): SwitchContext => ({
  dir: options.settings.dir,
  docker: options.docker,
  $: options.$,
  log: options.log,
  dbService: options.dbService,
});

/** A line per phase, numbered: what --dry-run prints and the run logs. */
function planLines(run: DeployRun, phases: Phase[]): string[] {
  const { settings } = run.options;
  const header =
    run.mode === 'ab'
      ? `Live slot: ${run.old!.project} (${run.old!.containers.map((c) => c.name).join(', ')})`
      : run.mode === 'fresh'
        ? `No live deployment runs; --fresh-from-backup: the newest backup is restored into a fresh deployment and proven${run.old ? `; the stopped ${run.old.containers.map((c) => c.name).join(', ')} give up their names at the switch` : ''}.`
        : `No live deployment ('${settings.container}' is not running, and nothing of one exists): first deployment.`;
  return [
    header,
    ...run.storageNotes.map((note) => `Storage: ${note}`),
    ...run.deviations.map((note) => `Deviation: ${note}`),
    ...(run.online
      ? [
          run.online.online
            ? `Fill: online, by logical replication from ${run.liveDb} while the game runs; the writers stop only for the final catch-up and the proof`
            : `Fill: offline (freeze, fresh dump, restore): ${run.online.reason}`,
        ]
      : []),
    ...phases.map((phase, i) => `${i + 1}. ${phase.name}: ${phase.describe}`),
    run.mode === 'first'
      ? '   any failure before the switch: remove the new stack, exit 1'
      : '   any failure or SIGINT/SIGTERM/SIGHUP before the switch: lift the fence, restart the live writers that were running, remove the new slot, exit 1',
  ];
}

/** What a deployment would do, phase by phase, from the current state; changes nothing (--dry-run). */
export async function planDeploy(options: Omit<DeployOptions, 'installCron'>): Promise<string[]> {
  const pending = await reconcileSwitch(switchContextOf(options), { dryRun: true });
  const run = await prepareRun({ ...options, installCron: async () => {} });
  const staged = readStagingJournal(options.settings.dir);
  return [
    ...(pending.action === 'none' ? [] : [`0. A switch journal was found first: ${pending.message}`]),
    ...(staged
      ? [
          `0. The staging journal names ${staged.project}, a slot an interrupted deployment was building: removed first (with its volumes and folders) unless it serves or is kept for --rollback`,
        ]
      : []),
    ...planLines(run, deployPhases(run)),
  ];
}

/** Runs the whole deployment; throws CliError (exit 1) when it stopped, with the live slot serving. */
export async function runDeploy(options: DeployOptions): Promise<DeployResult> {
  const { settings, log } = options;
  const lock = acquireLock(settings.dir, 'deploy-to-qnap');
  try {
    // A switch a killed run left half done is finished or undone before anything else is looked at.
    await reconcileSwitch(switchContextOf(options));
    // So is what a killed online fill changed on the live database (its slots keep WAL, its identities stay FULL).
    await reconcileReplication(options.$, options.docker, settings.dir, log);
    const run = await prepareRun(options);
    // And the slot it was building, which holds a copy of the database (after the subscription in it is dropped).
    await reconcileStaging(options, run.command, run.docker);
    const phases = deployPhases(run);
    log.info(
      `Deploying slot ${run.next.project}${run.old ? ` beside ${run.mode === 'ab' ? 'the live' : 'the stopped'} slot ${run.old.project}` : ' (no live deployment)'}, compose ${run.command.join(' ')}`,
    );
    let once: Promise<void> | undefined;
    await runPhases(
      phases,
      () => (once ??= rollBack(run)),
      log,
      (abort) => (run.abort = abort),
    );
    log.info(
      `${run.mode === 'first' ? 'First deployment' : 'Deployment'} is live: ${run.next.containers.map((c) => c.name).join(', ')}`,
    );
    return run.result!;
  } finally {
    lock.release();
  }
}

export { rollbackDeployment } from './rollback.ts';
