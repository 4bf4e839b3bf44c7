// The A-B deployment on the NAS, under the shared lock. The new slot's database is staged beside
// the live one, a backup is restored into it and proven by its fingerprint, and only then do its
// services start and take over the names; until the switch, the live slot is never touched
// except for stopping (and, on any failure, restarting) its writers.
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { backupFormatOf, runBackup } from './backup.ts';
import { backupStamp, listBackups, parseBackupName } from './backup-files.ts';
import { formatAge } from './backup-status.ts';
import { compose, detectCompose, readComposeServices, slotComposeFile, type ComposeCommand, type ComposeServiceInfo } from './compose.ts';
import { readDeployState, writeDeployState, deployDirName, type DeployState, type DeploySummary, type Slot, type SlotContainer } from './deploy-state.ts';
import { Docker } from './docker.ts';
import { CliError, UsageError, errorText } from './errors.ts';
import { quoteIdent } from './fingerprint.ts';
import { reconcileSwitch, switchAndFinish } from './deploy-switch.ts';
import { acquireLock } from './lock.ts';
import type { Logger } from './log.ts';
import { createScratch, dropScratch, oneShotSql, restoreBackup, restoreWithFallback, scratchName, StreamLoad, type RestoreResult } from './restore.ts';
import type { Settings } from './settings.ts';
import type { Shell } from './shell.ts';

export interface DeployOptions {
  settings: Settings;
  docker: string;
  $: Shell;
  log: Logger;
  /** The compose file on the NAS. */
  composeFile: string;
  /** The database service in it (the game's docker-compose.qnap.yml calls it `db`). */
  dbService: string;
  /** Stop the live writers before the fresh backup (zero loss); false: the seed's --no-freeze. */
  freeze: boolean;
  acceptOlderBackup: boolean;
  healthTimeoutMs: number;
  /** Installs or refreshes the backup cron job (setup-backup-cron's library). */
  installCron: (log: Logger) => Promise<void>;
  /** age secret keys for encrypted backups (from the workstation over SSH stdin); memory only. */
  identities?: string[];
  now?: () => Date;
}

export interface DeployResult extends DeploySummary {
  live: Slot;
  previous: Slot | undefined;
}

/** A compose project name derived from the NAS dir (compose allows [a-z0-9_-]). */
export function baseProjectName(dir: string): string {
  return basename(dir).toLowerCase().replace(/[^a-z0-9_-]/g, '') || 'planetarion';
}

/** The live slot: whatever runs under the configured DB container name (the old script's deployment too). */
async function findLiveSlot(docker: Docker, options: DeployOptions, state: DeployState): Promise<Slot | undefined> {
  const container = options.settings.container;
  const db = await docker.inspect(container);
  if (!db.exists || !db.running) return undefined;
  if (state.live && state.live.containers.some((c) => c.name === container)) return state.live;
  // Not ours (yet): a deployment started by the old script, recognised by its compose labels.
  const { project, service } = await docker.composeLabels(container);
  const members = project ? await docker.projectContainers(project) : [];
  const containers: SlotContainer[] = members.length
    ? members.map((m) => ({ service: m.service, name: m.name, canonicalName: m.name }))
    : [{ service: service ?? options.dbService, name: container, canonicalName: container }];
  return { project: project ?? container, slotId: `legacy${backupStamp(new Date())}`, managed: false, containers, since: 'before planetarion-backup' };
}

const writersOf = (slot: Slot, dbService: string) => slot.containers.filter((c) => c.service !== dbService);

/** Starts containers again (best effort on failure paths: logs what it could not do). */
async function restart(docker: Docker, names: string[], log: Logger): Promise<void> {
  if (!names.length) return;
  try {
    await docker.start(names);
    log.info(`Restarted the live writers: ${names.join(', ')}`);
  } catch (error) {
    log.error(`Could not restart ${names.join(', ')}: ${errorText(error)} — start them by hand: docker start ${names.join(' ')}`);
  }
}

/** Removes a slot this tool created, with its volumes. */
async function removeSlot($: Shell, command: ComposeCommand, slot: { project: string; file: string }, dir: string, log: Logger): Promise<void> {
  try {
    await compose($, command, slot.project, slot.file, dir, ['down', '-v', '--remove-orphans']);
    log.info(`Removed slot ${slot.project} and its volumes`);
  } catch (error) {
    log.error(`Could not remove slot ${slot.project}: ${errorText(error)}`);
  }
}

/** Renames the containers of a slot to their live names or to their slot names. */
async function renameSlot(docker: Docker, slot: Slot, live: boolean): Promise<Slot> {
  const containers: SlotContainer[] = [];
  for (const c of slot.containers) {
    const target = live ? c.canonicalName : `${c.canonicalName}-${slot.slotId}`;
    if (c.name !== target) await docker.rename(c.name, target);
    containers.push({ ...c, name: target });
  }
  return { ...slot, containers };
}

/**
 * Starts created containers in Compose's order, each once the services it needs with
 * `condition: service_healthy` are healthy (a plain `docker start` does not wait for them).
 */
async function startInOrder(docker: Docker, containers: SlotContainer[], services: ComposeServiceInfo[], timeoutMs: number): Promise<void> {
  const nameOf = new Map(containers.map((c) => [c.service, c.name]));
  const started: string[] = [];
  for (const { service, dependsOn } of services) {
    const name = nameOf.get(service);
    if (!name) continue;
    const healthyFirst = dependsOn.filter((d) => d.healthy && started.includes(nameOf.get(d.service)!)).map((d) => nameOf.get(d.service)!);
    if (healthyFirst.length) await docker.waitHealthy(healthyFirst, timeoutMs);
    await docker.start([name]);
    started.push(name);
  }
}

/** What a deployment would do, step by step, from the current state; changes nothing (--dry-run). */
export async function planDeploy(options: Omit<DeployOptions, 'installCron'>): Promise<string[]> {
  const { settings, $ } = options;
  const docker = new Docker(options.docker, $);
  const pending = await reconcileSwitch({ dir: settings.dir, docker: options.docker, $, log: options.log, dbService: options.dbService }, { dryRun: true });
  const journalNote = pending.action === 'none' ? [] : [`0. A switch journal was found first: ${pending.message}`];
  const command = await detectCompose($, options.docker);
  const live = await findLiveSlot(docker, { ...options, installCron: async () => {} }, readDeployState(settings.dir));
  const slotId = `s${backupStamp((options.now ?? (() => new Date()))())}`;
  const project = `${baseProjectName(settings.dir)}-${slotId}`;
  const names = readComposeServices(options.composeFile, options.dbService, settings.container, baseProjectName(settings.dir));
  const writers = live ? writersOf(live, options.dbService).map((c) => c.name) : [];
  const up = `${command.join(' ')} -p ${project} -f ${join(settings.dir, deployDirName, `${project}.yml`)} up -d`;
  if (!live) {
    return [
      ...journalNote,
      `No live deployment ('${settings.container}' is not running): first deployment.`,
      `1. ${up}   (services: ${names.map((n) => n.service).join(', ')})`,
      `2. wait until every container is healthy (at most ${Math.round(options.healthTimeoutMs / 1000)} s)`,
      `3. rename the containers to ${names.map((n) => n.canonicalName).join(', ')}`,
      '4. install the backup cron job; record deploy/state.json',
    ];
  }
  const backups = listBackups(settings.backupDir).map((b) => b.name);
  return [
    ...journalNote,
    `Live slot: ${live.project} (${live.containers.map((c) => c.name).join(', ')})`,
    `1. ${up} ${options.dbService}   (the new database, on its own volume, as ${settings.container}-${slotId}); create its other services without starting them`,
    options.freeze
      ? `2. stop the live writers (${writers.join(', ') || 'none'}) and take a fresh backup of ${settings.container}, restoring it into ${settings.container}-${slotId} as it is written`
      : '2. --no-freeze: the live writers keep serving; no fresh backup',
    `3. prove the restored fingerprint: ${options.freeze ? 'the fresh backup, then restore and prove ' : 'restore and prove '}${backups.join(', ') || '(no existing backups)'}`,
    `   all fail: remove the new slot, restart the live writers, exit 1${options.freeze && !options.acceptOlderBackup ? '; an older backup winning also stops here (no --accept-older-backup)' : ''}`,
    `4. docker start the new services in Compose's order, wait for health; unhealthy: remove the slot, restart the live writers, exit 1`,
    `5. switch: ${live.containers.map((c) => c.name).join(', ')} stop and take the suffix -${live.slotId}; the new containers take the names ${names.map((n) => n.canonicalName).join(', ')}`,
    '6. refresh the backup cron job; record deploy/state.json',
  ];
}

/** Runs the whole A-B deployment; throws CliError (exit 1) when it stopped, with the live slot serving. */
export async function runDeploy(options: DeployOptions): Promise<DeployResult> {
  const { settings, log, $ } = options;
  const now = options.now ?? (() => new Date());
  const started = Date.now();
  const docker = new Docker(options.docker, $);
  const lock = acquireLock(settings.dir, 'deploy-to-qnap');
  try {
    await reconcileSwitch({ dir: settings.dir, docker: options.docker, $, log, dbService: options.dbService });
    const command = await detectCompose($, options.docker);
    const state = readDeployState(settings.dir);
    const live = await findLiveSlot(docker, options, state);
    // Backups are encrypted when recipients are set: one cannot be restored into the new slot
    // without the key, so say so before anything is started or stopped (exit 2).
    if (live && settings.ageRecipients && !options.identities?.length) {
      throw new UsageError(
        'PLANETARION_AGE_RECIPIENTS is set, so backups are encrypted, and no identity was given to restore them into the new slot',
        'On the workstation pass --identity FILE (or set PLANETARION_AGE_IDENTITY): deploy-to-qnap sends it over the SSH session, never to the NAS disk.',
      );
    }

    const slotId = `s${backupStamp(now())}`;
    const project = `${baseProjectName(settings.dir)}-${slotId}`;
    const names = readComposeServices(options.composeFile, options.dbService, settings.container, baseProjectName(settings.dir));
    const slotFile = join(settings.dir, deployDirName, `${project}.yml`);
    const { yaml, warnings } = slotComposeFile(options.composeFile, { dbService: options.dbService, slotId, names });
    mkdirSync(dirname(slotFile), { recursive: true, mode: 0o700 });
    writeFileSync(slotFile, yaml, { mode: 0o600 });
    for (const warning of warnings) log.warn(warning);
    const slotContainers: SlotContainer[] = names.map(({ service, canonicalName }) => ({ service, canonicalName, name: `${canonicalName}-${slotId}` }));
    let next: Slot = { project, slotId, managed: true, containers: slotContainers, since: now().toISOString() };
    const newDb = `${settings.container}-${slotId}`;
    const newSlot = { project, file: slotFile };
    log.info(`Deploying slot ${project}${live ? ` beside the live slot ${live.project}` : ' (no live deployment)'}, compose ${command.join(' ')}`);

    if (!live) {
      try {
        await compose($, command, project, slotFile, settings.dir, ['up', '-d']);
        await docker.waitHealthy(slotContainers.map((c) => c.name), options.healthTimeoutMs);
      } catch (error) {
        await removeSlot($, command, newSlot, settings.dir, log);
        throw new CliError(`the new stack did not become healthy: ${errorText(error)}`, { cause: error });
      }
      next = await renameSlot(docker, next, true);
      await options.installCron(log);
      const summary: DeploySummary = { time: now().toISOString(), ok: true, mode: 'first', backupUsed: null, backupAgeSeconds: null, fingerprint: null, downtimeMs: null, totalMs: Date.now() - started, attempts: [] };
      writeDeployState(settings.dir, { live: next, previous: state.previous, lastDeploy: summary });
      log.info(`First deployment is live: ${next.containers.map((c) => c.name).join(', ')}`);
      return { ...summary, live: next, previous: state.previous };
    }

    // 1. Stage the new slot's database on its own volume, beside the live one.
    await compose($, command, project, slotFile, settings.dir, ['up', '-d', options.dbService]);
    const liveWriters = writersOf(live, options.dbService).map((c) => c.name);
    let writersStoppedAt: number | undefined;
    let aborted = false;
    const abort = async (message: string, advice: string): Promise<never> => {
      aborted = true;
      await removeSlot($, command, newSlot, settings.dir, log);
      if (writersStoppedAt !== undefined) await restart(docker, liveWriters, log);
      throw new CliError(message, { advice });
    };
    try {
      await docker.waitHealthy([newDb], options.healthTimeoutMs);
    } catch (error) {
      return await abort(`the new database did not start: ${errorText(error)}`, 'The live deployment was not touched.');
    }

    // Steps 2 to 4 change nothing the live slot cannot get back: any failure in them, expected or
    // not, removes the new slot and restarts the live writers.
    const stageAndProve = async () => {
      // Prepared while the writers still serve: the new slot's own empty database goes (the
      // restored one takes its name), its writers are created but not started (starting them
      // after the proof is then a `docker start`, not a Compose run), and the fresh dump gets
      // an empty database to stream into.
      const target = { docker: options.docker, container: newDb, user: settings.dbUser, database: settings.dbName };
      const restoreOptions = { target, $, log, logDir: settings.logDir, identities: options.identities };
      const sql = oneShotSql($, target);
      await sql(`DROP DATABASE IF EXISTS ${quoteIdent(settings.dbName)} WITH (FORCE);`);
      const newWriters = slotContainers.filter((c) => c.service !== options.dbService);
      if (newWriters.length) await compose($, command, project, slotFile, settings.dir, ['up', '--no-start', '--no-deps', ...newWriters.map((c) => c.service)]);
      const streamInto = options.freeze ? scratchName(target, 'stream', backupStamp(now())) : undefined;
      if (streamInto) await createScratch(sql, streamInto);

      // 2. Freeze: stop the live writers, so the fresh backup holds every row they wrote. The
      // dump is restored into the new slot while it is written: the writers wait for the slower
      // of the two, not for both one after the other.
      let candidates: string[];
      let fresh: string | undefined;
      let stream: StreamLoad | undefined;
      if (streamInto) {
        log.info(`Stopping the live writers: ${liveWriters.join(', ') || 'none'}`);
        writersStoppedAt = Date.now();
        await docker.stop(liveWriters);
        stream = new StreamLoad(target, streamInto, backupFormatOf(settings));
        const load = stream;
        try {
          const backup = await runBackup({ settings, docker: options.docker, $, log, dryRun: false, lockHeld: true, tee: (chunk) => load.write(chunk) });
          fresh = backup.path!;
        } catch (error) {
          log.error(`The fresh backup of the live database failed: ${errorText(error)}; trying the existing backups`);
          await stream.abort();
          await dropScratch(sql, streamInto, log);
          stream = undefined;
        }
      }
      candidates = listBackups(settings.backupDir).map((b) => b.path);
      if (fresh) candidates = [fresh, ...candidates.filter((c) => c !== fresh)];
      if (!candidates.length) return await abort('there is no backup to restore into the new slot', 'The live deployment is serving as before. Check the backup log.');

      // 3. Prove the new slot's data, newest backup first: the fresh one already streamed in (a
      // failure there is its attempt: the same bytes from the file would fail the same way).
      const streamed = fresh && stream ? [await restoreBackup(fresh, restoreOptions, 1, stream)] : [];
      const { winner, attempts } = streamed[0]?.ok
        ? { winner: streamed[0], attempts: streamed }
        : await restoreWithFallback(streamed.length ? candidates.slice(1) : candidates, restoreOptions, streamed);
      const attemptSummary = attempts.map((a: RestoreResult) => ({ file: basename(a.file), ok: a.ok, reason: a.reason, diagnostics: a.diagnostics }));
      const lost = attempts.filter((a) => !a.ok).map((a) => `${basename(a.file)}: ${a.reason}`);
      if (!winner) {
        return await abort(`every restore into the new slot failed (${attempts.length} attempt(s)); the deployment was aborted`, `The live deployment is serving as before. Diagnostics: ${attempts.map((a) => a.diagnostics).join(', ')}`);
      }
      const winnerTime = parseBackupName(basename(winner.file))?.time;
      const ageSeconds = winnerTime ? Math.round((Date.now() - winnerTime.getTime()) / 1000) : null;
      if (options.freeze && winner.file !== fresh) {
        const age = ageSeconds === null ? 'unknown age' : `${formatAge(ageSeconds)} old`;
        if (!options.acceptOlderBackup) {
          return await abort(
            `the fresh backup could not be restored; the newest restorable one, ${basename(winner.file)}, is ${age} and would lose the data written since`,
            `The live deployment is serving as before. Why each lost: ${lost.join('; ')}. To deploy with that older data anyway, add --accept-older-backup.`,
          );
        }
        log.warn(`Deploying with an older backup, ${basename(winner.file)} (${age}): ${lost.join('; ')}`);
      }

      // 4. Start the new slot's services; in --no-freeze mode the live writers stop only now.
      if (!options.freeze) {
        writersStoppedAt = Date.now();
        await docker.stop(liveWriters);
      }
      try {
        await startInOrder(docker, newWriters, names, options.healthTimeoutMs);
        await docker.waitHealthy(slotContainers.map((c) => c.name), options.healthTimeoutMs);
      } catch (error) {
        log.error(`The new slot did not become healthy: ${errorText(error)}; rolling back`);
        return await abort(`the new slot did not become healthy (${errorText(error)}); rolled back to the live slot`, 'The live deployment is serving again.');
      }
      return { winner, attemptSummary, ageSeconds, writersUpAt: Date.now() };
    };
    let staged: Awaited<ReturnType<typeof stageAndProve>>;
    try {
      staged = await stageAndProve();
    } catch (error) {
      if (aborted) throw error;
      return await abort(`the deployment stopped before the switch: ${errorText(error)}`, 'The live deployment is serving as before.');
    }
    const { winner, attemptSummary, ageSeconds, writersUpAt } = staged;

    // 5. Switch, journalled (deploy-switch.ts): from here on, failures only warn.
    const summary: DeploySummary = {
      time: now().toISOString(),
      ok: true,
      mode: 'ab',
      backupUsed: basename(winner.file),
      backupAgeSeconds: ageSeconds,
      fingerprint: winner.fingerprint,
      downtimeMs: writersStoppedAt === undefined ? null : writersUpAt - writersStoppedAt,
      totalMs: Date.now() - started,
      attempts: attemptSummary,
    };
    const older = state.previous?.managed && state.previous.project !== live.project ? state.previous : undefined;
    const switchContext = { dir: settings.dir, docker: options.docker, $, log, dbService: options.dbService };
    const switched = await switchAndFinish(switchContext, { kind: 'deploy', outgoing: live, incoming: next, stateBefore: state, summary }, [
      { name: 'removing the older previous slot', run: async () => void (older && (await removeSlot($, command, { project: older.project, file: join(settings.dir, deployDirName, `${older.project}.yml`) }, settings.dir, log))) },
      { name: 'installing the backup cron job', run: () => options.installCron(log) },
    ]);
    return { ...switched.summary, live: switched.live, previous: switched.previous };
  } finally {
    lock.release();
  }
}

export { rollbackDeployment } from './deploy-rollback.ts';
