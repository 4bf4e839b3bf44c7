// What a deployment killed outright (SIGKILL, a power cut) had stopped of the live slot: its
// writers (freeze, or start with --no-freeze) and, in the release phase, its database. The
// rollback that would start them again never ran, and a `docker stop`ped container stays stopped
// across a reboot (restart: unless-stopped), so the game would stay down until someone noticed.
// The staging journal records them before each stop; the next deployment, `deploy-to-qnap
// --status` and every scheduled backup start them again, once no run holds the lock.
import { Docker } from '../host/docker.ts';
import { errorText } from '../errors.ts';
import { acquireLock, LockHeldError } from '../host/lock.ts';
import type { Logger } from '../log.ts';
import type { Shell } from '../host/shell.ts';
import { readStagingJournal, stagedSlotFate, writeStagingJournal, type StagingJournal } from './staging-journal.ts';
import { readDeployState } from './state.ts';

export interface StopsContext {
  dir: string;
  docker: string;
  $: Shell;
  log: Logger;
}

/** How long a restarted database may take to become healthy before its writers start anyway. */
const databaseHealthMs = 180_000;

/**
 * Starts again the live containers the journalled run stopped, when its slot never served (a
 * slot that did is the switch's to reconcile). The slot's own containers are stopped first: after
 * a power cut their restart policy may have started them, holding the game's ports and taking
 * its writes. The database starts before its writers. The journal then records none, and stays
 * for the next deployment to remove the slot. Returns what was started.
 */
export async function startInterruptedStops(ctx: StopsContext, journal: StagingJournal): Promise<string[]> {
  const stopped = [...(journal.stoppedDatabase ? [journal.stoppedDatabase] : []), ...(journal.stoppedWriters ?? [])];
  if (!stopped.length) return [];
  const docker = new Docker(ctx.docker, ctx.$);
  const members = await docker.projectContainers(journal.project);
  const projectOf = new Map(members.map((m) => [m.name, m.project]));
  if (stagedSlotFate(journal, readDeployState(ctx.dir), projectOf) === 'keep') return [];
  const slotRunning = members.filter((m) => m.running).map((m) => m.name);
  if (slotRunning.length) {
    ctx.log.warn(`Stopping ${slotRunning.join(', ')} of slot ${journal.project}, which never served`);
    await docker.stop(slotRunning);
  }
  const states = await docker.inspectMany(stopped);
  const toStart = stopped.filter((_, i) => states[i]!.exists && !states[i]!.running);
  ctx.log.warn(
    `An interrupted deployment had stopped ${stopped.join(', ')} of the live slot: starting ${toStart.join(', ') || 'none (all run)'}`,
  );
  const database = journal.stoppedDatabase;
  if (database && toStart.includes(database)) {
    await docker.start([database]);
    // Its writers may fail their own start-up against a server that is not up yet.
    await docker
      .waitHealthy([database], databaseHealthMs)
      .catch((error: unknown) => ctx.log.error(`${database} did not become healthy: ${errorText(error)}`));
  }
  await docker.start(toStart.filter((name) => name !== database));
  writeStagingJournal(ctx.dir, { ...journal, stoppedWriters: [], stoppedDatabase: undefined });
  return toStart;
}

/**
 * startInterruptedStops for a run that does not hold the lock (a backup, --status): skipped while
 * another run holds it; a failure is logged and reported, never thrown (the journal stays, and
 * the next run tries again).
 */
export async function startInterruptedStopsIfIdle(
  ctx: StopsContext,
  command: string,
): Promise<'none' | 'busy' | 'failed' | { started: string[] }> {
  let lock: ReturnType<typeof acquireLock> | undefined;
  try {
    const journal = readStagingJournal(ctx.dir);
    if (!journal?.stoppedWriters?.length && !journal?.stoppedDatabase) return 'none';
    lock = acquireLock(ctx.dir, `${command} (starting what an interrupted deployment stopped)`);
    // Read again under the lock: the run that held it may have finished meanwhile.
    const current = readStagingJournal(ctx.dir);
    return { started: current ? await startInterruptedStops(ctx, current) : [] };
  } catch (error) {
    if (error instanceof LockHeldError) return 'busy';
    ctx.log.error(`Could not start what an interrupted deployment stopped: ${errorText(error)}`);
    return 'failed';
  } finally {
    lock?.release();
  }
}
