// The switch journal, `<dir>/deploy/switch.json`: written (atomically, fsynced) before the
// container renames of a switch and again after them, so a run killed between two renames
// leaves a record of which containers (by ID and compose labels) were going from which name to
// which. Every later run reads it first and reconciles it with what Docker shows.
import { journalFile } from './journal-file.ts';
import type { DeployState, Slot } from './state.ts';
import { CliError } from '../errors.ts';
import type { Shell } from '../host/shell.ts';

/** One container of a switch: where its name goes, and how to recognise it. */
export interface JournalContainer {
  id: string;
  service: string;
  /** Its name before the switch, and after it. */
  from: string;
  to: string;
  /** Its compose labels when the journal was written (a different container under the same ID is refused). */
  project: string | undefined;
  /** Whether an undo starts it again (the outgoing slot's containers that served before). */
  startOnUndo: boolean;
  /** A one-shot service (migration, seed): exited 0 is serving, for the rule of switch.ts. */
  oneShot?: boolean;
}

export interface SwitchJournal {
  /** What switched: an A-B deployment, or --rollback. */
  kind: 'deploy' | 'rollback';
  /** `renaming`: written before the first rename; `renamed`: after the last one. */
  phase: 'renaming' | 'renamed';
  started: string;
  /** The slot giving up the live names (stopped once it has; none for a first deployment), then the one taking them. */
  outgoing: { slot: Slot | undefined; containers: JournalContainer[] };
  incoming: { slot: Slot; containers: JournalContainer[] };
  /** What deploy/state.json says once the switch is complete, and if it is undone. */
  stateAfter: DeployState;
  stateUndone: DeployState;
}

export const journalFileName = 'switch.json';

const file = journalFile<SwitchJournal>({
  fileName: journalFileName,
  title: 'the switch journal',
  records: 'a switch of container names that did not finish',
  valid: (j) => {
    const journal = j as Partial<SwitchJournal>;
    return Boolean(journal.incoming && journal.outgoing && journal.phase);
  },
  repair: `Compare 'docker ps -a' with the names it lists, put the containers right by hand (docker rename), then remove the file.`,
});

/** The journal of an unfinished switch, or undefined; an unreadable one is an error naming the file. */
export const readJournal = file.read;
/** Writes the journal atomically and durably (0600). */
export const writeJournal = file.write;
/** Removes the journal once its switch is complete or undone and recorded. */
export const removeJournal = file.remove;

/** What Docker says about one container, looked up by ID or name. */
export interface ContainerFacts {
  id: string;
  name: string;
  running: boolean;
  status: string;
  health: string | undefined;
  project: string | undefined;
  exitCode: number | undefined;
  /** Its restart policy as `docker update --restart` takes it (`no`, `always`, `on-failure:3`...). */
  restart: string;
}

/** The facts of each container that exists, by the reference asked (ID or name); one docker call. */
export async function inspectContainers(
  $: Shell,
  docker: string,
  refs: string[],
): Promise<Map<string, ContainerFacts>> {
  const out = new Map<string, ContainerFacts>();
  if (!refs.length) return out;
  const result = await $({
    timeout: '30s',
    nothrow: true,
  })`${docker} container inspect --format ${'{{json .}}'} ${refs}`;
  const problems = result.stderr.split('\n').filter((line) => line.trim() && !/no such (container|object)/i.test(line));
  if (result.exitCode !== 0 && problems.length)
    throw new CliError(`docker container inspect failed: ${problems.join(' ')}`);
  for (const line of result.stdout.split('\n').filter(Boolean)) {
    const info = JSON.parse(line) as {
      Id: string;
      Name: string;
      State: { Status: string; Running: boolean; ExitCode?: number; Health?: { Status: string } };
      Config: { Labels?: Record<string, string> | null };
      HostConfig?: { RestartPolicy?: { Name?: string; MaximumRetryCount?: number } };
    };
    const policy = info.HostConfig?.RestartPolicy;
    const facts: ContainerFacts = {
      id: info.Id,
      name: info.Name.replace(/^\//, ''),
      running: info.State.Running,
      status: info.State.Status,
      health: info.State.Health?.Status,
      project: info.Config.Labels?.['com.docker.compose.project'],
      exitCode: info.State.Status === 'exited' ? info.State.ExitCode : undefined,
      restart: restartValue(policy?.Name ?? '', policy?.MaximumRetryCount ?? 0),
    };
    const ref = refs.find((r) => info.Id.startsWith(r) || r === facts.name);
    if (ref) out.set(ref, facts);
  }
  return out;
}

/** The `docker update --restart` value of an inspected policy. Pure. */
export function restartValue(name: string, maximumRetryCount: number): string {
  return name === 'on-failure' && maximumRetryCount > 0 ? `on-failure:${maximumRetryCount}` : name || 'no';
}

/** Ready to serve: running, and healthy where it has a health check; a one-shot service, done (exited 0). */
export const isServing = (facts: ContainerFacts | undefined, oneShot = false): boolean =>
  !!facts &&
  (oneShot && facts.status === 'exited'
    ? facts.exitCode === 0
    : facts.running && (facts.health === undefined || facts.health === 'healthy'));
