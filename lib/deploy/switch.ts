// The switch of an A-B deployment or a rollback: the outgoing slot gives up the live container
// names and stops, the incoming slot takes them. It is journalled (journal.ts) so that a
// run killed between two renames is finished or undone by the next run, by one rule:
//   once every outgoing container has given up its live name, and every incoming container runs
//   (healthy where it has a health check), the switch is finished forward; otherwise it is undone
//   (the incoming slot stopped under its slot names, the outgoing one live and started again).
// The same rule handles a rename that fails during the run itself.
import { join } from 'node:path';
import {
  readJournal,
  removeJournal,
  writeJournal,
  inspectContainers,
  isServing,
  journalFileName,
  type ContainerFacts,
  type JournalContainer,
  type SwitchJournal,
} from './journal.ts';
import {
  deployDirName,
  slotComposePath,
  writeDeployState,
  type DeployState,
  type DeploySummary,
  type Slot,
} from './state.ts';
import { Docker } from '../host/docker.ts';
import { settleRestartPolicies } from './restart-policy.ts';
import { CliError, errorText } from '../errors.ts';
import { acquireLock, LockHeldError } from '../host/lock.ts';
import type { Logger } from '../log.ts';
import type { Shell } from '../host/shell.ts';

export interface SwitchContext {
  dir: string;
  docker: string;
  $: Shell;
  log: Logger;
  /** The database service, put first in a new journal so an undo starts it before its writers (default db). */
  dbService?: string;
}

export interface SwitchRequest {
  kind: SwitchJournal['kind'];
  /** The live slot (its containers under their live names); none for a first deployment. */
  outgoing: Slot | undefined;
  /** The slot to make live (its containers under their slot names). */
  incoming: Slot;
  /** The state before the switch: what stays recorded if it is undone. */
  stateBefore: DeployState;
  /** The run's summary, recorded with the switch. */
  summary: DeploySummary;
  /** Which outgoing containers an undo starts again (default: all). */
  startOnUndo?: (service: string) => boolean;
  /** The incoming slot's one-shot containers (migrations): exited 0 counts as serving. */
  oneShot?: string[];
}

/** A step after the switch (clean-up, cron): its failure is a warning, the switch stands. */
export interface AfterSwitchStep {
  name: string;
  run: () => Promise<void>;
}

export interface Switched {
  live: Slot;
  /** The slot that gave up the names (for a first deployment: the one recorded before, if any). */
  previous: Slot | undefined;
  summary: DeploySummary;
}

const slotName = (canonicalName: string, slot: Slot) => `${canonicalName}-${slot.slotId}`;

/** A slot with each container under the name the journal moves it to. */
function renamed(slot: Slot, containers: JournalContainer[]): Slot {
  return {
    ...slot,
    containers: slot.containers.map((c) => ({ ...c, name: containers.find((j) => j.from === c.name)!.to })),
  };
}

/** The journal of a switch about to start: each container's ID and labels from Docker. */
async function journalFor(ctx: SwitchContext, request: SwitchRequest): Promise<SwitchJournal> {
  const { outgoing, incoming } = request;
  const names = [...(outgoing?.containers ?? []), ...incoming.containers].map((c) => c.name);
  const facts = await inspectContainers(ctx.$, ctx.docker, names);
  const missing = names.filter((n) => !facts.has(n));
  if (missing.length)
    throw new CliError(`cannot switch: container(s) ${missing.join(', ')} do not exist`, {
      advice: 'Nothing was renamed. See docker ps -a.',
    });
  const db = ctx.dbService ?? 'db';
  const dbFirst = <T extends { service: string }>(list: T[]) =>
    [...list].sort((a, b) => Number(b.service === db) - Number(a.service === db));
  const entry = (name: string, service: string, to: string, startOnUndo: boolean): JournalContainer => {
    const f = facts.get(name)!;
    return {
      id: f.id,
      service,
      from: name,
      to,
      project: f.project,
      startOnUndo,
      ...(request.oneShot?.includes(name) ? { oneShot: true } : {}),
    };
  };
  const startOnUndo = request.startOnUndo ?? (() => true);
  const out = outgoing
    ? dbFirst(outgoing.containers).map((c) =>
        entry(c.name, c.service, slotName(c.canonicalName, outgoing), startOnUndo(c.service)),
      )
    : [];
  const into = dbFirst(incoming.containers).map((c) => entry(c.name, c.service, c.canonicalName, false));
  const live = renamed(incoming, into);
  const previous = outgoing ? renamed(outgoing, out) : request.stateBefore.previous;
  return {
    kind: request.kind,
    phase: 'renaming',
    started: new Date().toISOString(),
    outgoing: { slot: outgoing, containers: out },
    incoming: { slot: incoming, containers: into },
    stateAfter: { live, previous, lastDeploy: { ...request.summary, outcome: 'switched' } },
    stateUndone: {
      ...request.stateBefore,
      lastDeploy: {
        ...request.summary,
        ok: false,
        outcome: 'undone',
        error: `the ${request.kind === 'rollback' ? 'rollback' : 'switch'} was interrupted and undone: ${outgoing ? `${outgoing.project} is live` : 'nothing is live (a first deployment)'}`,
      },
    },
  };
}

/** Renames a container (by ID) unless it has that name already. */
async function renameTo(
  ctx: SwitchContext,
  c: JournalContainer,
  facts: Map<string, ContainerFacts>,
  name: string,
): Promise<void> {
  if (facts.get(c.id)?.name === name) return;
  await ctx.$({ timeout: '30s' })`${ctx.docker} rename ${c.id} ${name}`;
  ctx.log.info(`Renamed ${facts.get(c.id)?.name ?? c.id} to ${name}`);
}

async function stopAll(ctx: SwitchContext, containers: JournalContainer[]): Promise<void> {
  if (containers.length) await ctx.$({ timeout: '120s' })`${ctx.docker} stop ${containers.map((c) => c.id)}`;
}

/** Forward: the outgoing slot gives up the names and stops, the incoming one takes them. */
async function applyForward(ctx: SwitchContext, journal: SwitchJournal): Promise<void> {
  const ids = () => [...journal.outgoing.containers, ...journal.incoming.containers].map((c) => c.id);
  let facts = await inspectContainers(ctx.$, ctx.docker, ids());
  for (const c of journal.outgoing.containers) await renameTo(ctx, c, facts, c.to);
  await stopAll(
    ctx,
    journal.outgoing.containers.filter((c) => facts.get(c.id)?.running),
  );
  facts = await inspectContainers(ctx.$, ctx.docker, ids());
  for (const c of journal.incoming.containers) await renameTo(ctx, c, facts, c.to);
}

/** Undo: the incoming slot stops and takes back its slot names; the outgoing one is live and started again. */
async function applyUndo(ctx: SwitchContext, journal: SwitchJournal): Promise<void> {
  const ids = () => [...journal.outgoing.containers, ...journal.incoming.containers].map((c) => c.id);
  let facts = await inspectContainers(ctx.$, ctx.docker, ids());
  await stopAll(
    ctx,
    journal.incoming.containers.filter((c) => facts.get(c.id)?.running),
  );
  for (const c of journal.incoming.containers) await renameTo(ctx, c, facts, c.from);
  facts = await inspectContainers(ctx.$, ctx.docker, ids());
  for (const c of journal.outgoing.containers) await renameTo(ctx, c, facts, c.from);
  // One at a time, the database first: its writers wait for it.
  const started: string[] = [];
  for (const c of journal.outgoing.containers.filter((c) => c.startOnUndo && !facts.get(c.id)?.running)) {
    await ctx.$({ timeout: '120s' })`${ctx.docker} start ${c.id}`;
    ctx.log.info(`Started ${c.from} again`);
    started.push(c.from);
  }
  // The deployment may have stopped the live database before the switch: serve again before the
  // caller goes on (a backup right after the undo needs a healthy database).
  if (started.length) {
    await new Docker(ctx.docker, ctx.$).waitHealthy(started, undoHealthTimeoutMs).then(
      () => ctx.log.info(`Healthy again: ${started.join(', ')}`),
      (error: unknown) => ctx.log.warn(`After the undo, not healthy yet: ${errorText(error)}`),
    );
  }
}

/** How long an undone switch waits for the live slot to be healthy again. */
const undoHealthTimeoutMs = 180_000;

export type Reconciled = { action: 'none' } | { action: 'recorded' | 'finished' | 'undone'; message: string };

/**
 * The rule: finish forward once the outgoing slot gave up every name and the incoming one serves.
 * `probed`: incoming containers Docker still calls "starting" whose own health check passed.
 */
function decide(
  journal: SwitchJournal,
  facts: Map<string, ContainerFacts>,
  probed: Set<string>,
): 'recorded' | 'finished' | 'undone' {
  if (journal.phase === 'renamed') return 'recorded';
  const released = journal.outgoing.containers.every((c) => facts.get(c.id)!.name !== c.from);
  const serving = journal.incoming.containers.every((c) => probed.has(c.id) || isServing(facts.get(c.id), c.oneShot));
  return released && serving ? 'finished' : 'undone';
}

/** How long a reconciliation waits for incoming containers that are still "starting". */
const startingWaitMs = 60_000;

/**
 * The run switches once each new service's own health check passed (Docker's first run of it
 * comes `interval` after the start), so a run killed during the switch may leave containers that
 * Docker still calls "starting": the same check decides for them here. Returns those that passed.
 */
async function probeStarting(
  ctx: SwitchContext,
  journal: SwitchJournal,
  facts: Map<string, ContainerFacts>,
): Promise<Set<string>> {
  if (journal.phase === 'renamed') return new Set();
  const starting = journal.incoming.containers
    .filter((c) => facts.get(c.id)?.running && facts.get(c.id)?.health === 'starting')
    .map((c) => c.id);
  if (!starting.length) return new Set();
  // A one-shot that exits 0 meanwhile is done, not failed (its check then turns "unhealthy").
  const oneShot = journal.incoming.containers.filter((c) => c.oneShot).map((c) => c.id);
  const passed = await new Docker(ctx.docker, ctx.$)
    .waitHealthy(starting, startingWaitMs, { probe: true, oneShot })
    .then(
      () => true,
      (error: unknown) => {
        // The same "undone" follows as when none was starting; the log says which it was.
        ctx.log.warn(
          `The incoming containers Docker still called "starting" did not pass their health check: ${errorText(error)}`,
        );
        return false;
      },
    );
  return new Set(passed ? starting : []);
}

/**
 * Finishes or undoes a switch that a killed run left half done (see the rule at the top), records
 * the outcome in deploy/state.json and removes the journal. The caller holds the shared lock.
 * With dryRun it only says what it would do. Throws a CliError when a journalled container is
 * gone or is another one (different compose project): that needs a person.
 */
export async function reconcileSwitch(ctx: SwitchContext, options: { dryRun?: boolean } = {}): Promise<Reconciled> {
  const journal = readJournal(ctx.dir);
  if (!journal) return { action: 'none' };
  const all = [...journal.outgoing.containers, ...journal.incoming.containers];
  const facts = await inspectContainers(
    ctx.$,
    ctx.docker,
    all.map((c) => c.id),
  );
  const foreign = all.filter((c) => facts.get(c.id)?.project !== c.project);
  if (foreign.length) {
    throw new CliError(
      `the switch journal ${join(ctx.dir, deployDirName, journalFileName)} names container(s) that are gone or changed: ${foreign.map((c) => `${c.from} (${c.id.slice(0, 12)})`).join(', ')}`,
      {
        advice: `Put the names right by hand (docker ps -a; docker rename), start the slot that should serve, then remove ${journalFileName}.`,
      },
    );
  }
  const probed = await probeStarting(ctx, journal, facts);
  // After a wait, decide on what the containers are now (one may have exited, or been checked by Docker).
  const now = probed.size
    ? await inspectContainers(
        ctx.$,
        ctx.docker,
        all.map((c) => c.id),
      )
    : facts;
  const action = decide(journal, all.every((c) => now.has(c.id)) ? now : facts, probed);
  const [into, out] = [journal.incoming.slot.project, journal.outgoing.slot?.project];
  // The undone slot is kept, stopped: its writers may have served (and written) before the switch.
  const removal = `its data is kept; once not needed: docker compose -p ${into} -f ${slotComposePath(ctx.dir, into)} down -v`;
  const what = {
    recorded: `a ${journal.kind} switch to ${into} had completed before the run ended; recorded it`,
    finished: `an interrupted ${journal.kind} switch to ${into} was finished: ${out ? `${out} had given up its names and ` : ''}${into} serves`,
    undone: `an interrupted ${journal.kind} switch to ${into} was undone: ${out ? `${out} is live again` : 'nothing is live (it was a first deployment)'}, ${into} is stopped under its slot names${journal.kind === 'deploy' ? ` (${removal})` : ''}`,
  }[action];
  if (options.dryRun) return { action, message: `would be reconciled: ${what}` };
  ctx.log.warn(`Found the journal of an unfinished switch (${journal.kind}, started ${journal.started}): reconciling`);
  if (action === 'finished') await applyForward(ctx, journal);
  if (action === 'undone') await applyUndo(ctx, journal);
  const note = `${action === 'undone' ? '' : 'switched; '}reconciled by a later run: ${what}`;
  const state = action === 'undone' ? journal.stateUndone : journal.stateAfter;
  writeDeployState(ctx.dir, {
    ...state,
    lastDeploy: state.lastDeploy && { ...state.lastDeploy, warnings: [...(state.lastDeploy.warnings ?? []), note] },
  });
  await settlePolicies(ctx, journal, action === 'undone' ? 'undone' : 'forward');
  removeJournal(ctx.dir);
  ctx.log.warn(`Reconciled: ${what}`);
  return { action, message: what };
}

/**
 * Reconciles under the shared lock, for runs that do not hold it (--status, backup-database):
 * skipped when another run holds the lock (it may be switching right now) or there is no journal.
 */
export async function reconcileIfIdle(ctx: SwitchContext, command: string): Promise<Reconciled | { action: 'busy' }> {
  if (!readJournal(ctx.dir)) return { action: 'none' };
  let lock: ReturnType<typeof acquireLock>;
  try {
    lock = acquireLock(ctx.dir, `${command} (reconciling a switch)`);
  } catch (error) {
    if (error instanceof LockHeldError) return { action: 'busy' };
    throw error;
  }
  try {
    return await reconcileSwitch(ctx);
  } finally {
    lock.release();
  }
}

/** The slot that serves after the switch keeps (or gets back) its restart policy; the other one may not restart on its own. */
function settlePolicies(ctx: SwitchContext, journal: SwitchJournal, way: 'forward' | 'undone'): Promise<void> {
  const ids = (slot: 'incoming' | 'outgoing') => journal[slot].containers.map((c) => c.id);
  const [live, retired] = way === 'forward' ? [ids('incoming'), ids('outgoing')] : [ids('outgoing'), ids('incoming')];
  return settleRestartPolicies(ctx, live, retired);
}

/**
 * The journalled switch. A failing rename is reconciled at once by the same rule, so the names
 * end complete one way or the other; returns the slots as they ended, or throws when undone.
 */
export async function switchSlots(ctx: SwitchContext, request: SwitchRequest): Promise<Switched> {
  const journal = await journalFor(ctx, request);
  writeJournal(ctx.dir, journal);
  try {
    await applyForward(ctx, journal);
  } catch (error) {
    ctx.log.error(`The switch failed: ${errorText(error)}; putting the names right`);
    const reconciled = await reconcileSwitch(ctx);
    if (reconciled.action !== 'finished') {
      throw new CliError(`the switch of the container names failed (${errorText(error)}) and was undone`, {
        advice: `${request.outgoing ? `${request.outgoing.project} is live as before` : 'Nothing is live (a first deployment)'}. See ${ctx.log.file ?? 'the log'}.`,
        cause: error,
      });
    }
    return {
      live: journal.stateAfter.live!,
      previous: journal.stateAfter.previous,
      summary: journal.stateAfter.lastDeploy!,
    };
  }
  writeJournal(ctx.dir, { ...journal, phase: 'renamed' });
  writeDeployState(ctx.dir, journal.stateAfter);
  await settlePolicies(ctx, journal, 'forward');
  removeJournal(ctx.dir);
  ctx.log.info(
    `Switched: ${journal.stateAfter.live!.containers.map((c) => c.name).join(', ')} are live${request.outgoing ? `; ${request.outgoing.project} is stopped and kept` : ''}`,
  );
  return {
    live: journal.stateAfter.live!,
    previous: journal.stateAfter.previous,
    summary: journal.stateAfter.lastDeploy!,
  };
}

/**
 * The switch, then the steps after it: each failure there is logged as a warning and recorded;
 * the state says `switched` whatever happens after the names moved.
 */
export async function switchAndFinish(
  ctx: SwitchContext,
  request: SwitchRequest,
  after: AfterSwitchStep[],
): Promise<Switched> {
  const switched = await switchSlots(ctx, request);
  const warnings: string[] = [];
  for (const step of after) {
    try {
      await step.run();
    } catch (error) {
      warnings.push(`${step.name} failed after the switch: ${errorText(error)}`);
      ctx.log.warn(warnings[warnings.length - 1]!);
    }
  }
  const summary: DeploySummary = { ...switched.summary, ...(warnings.length ? { warnings } : {}) };
  try {
    writeDeployState(ctx.dir, { live: switched.live, previous: switched.previous, lastDeploy: summary });
  } catch (error) {
    ctx.log.warn(
      `Could not record the final summary in ${join(ctx.dir, deployDirName, 'state.json')}: ${errorText(error)} (the switch itself is recorded)`,
    );
  }
  return { ...switched, summary };
}
