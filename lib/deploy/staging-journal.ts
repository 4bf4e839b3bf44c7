// The staging journal, `<dir>/deploy/staging.json`: the new slot a deployment is building (its
// compose project and file, the folders it created, whether its storage turned out to be the live
// one's). Written before the slot's first container or folder exists and removed when the rollback
// has removed the slot or the switch has made it live, so a run killed by SIGKILL or a power loss
// in between leaves a record; the next deployment removes that slot. Without it, every killed run
// would leave a full copy of the database on the NAS's disk.
import { journalFile } from './journal-file.ts';
import type { DeployState, SlotContainer } from './state.ts';

export interface StagingJournal {
  /** The slot's compose project and its compose file. */
  project: string;
  file: string;
  /** Its containers: while none of them has its canonical name, the slot has never served. */
  containers: SlotContainer[];
  /** Folders this run created for the slot (recorded after each mkdir: never one that was there). */
  folders: string[];
  /** The slot's server turned out to be the live cluster: its storage is the live one's, keep it. */
  keepStorage: boolean;
  /**
   * The live writers this run stopped and has not started again (freeze, or start with
   * --no-freeze), recorded before they stop: a run killed outright leaves the game down
   * otherwise (interrupted-stops.ts). Absent in journals of older versions.
   */
  stoppedWriters?: string[];
  /** The live database container, recorded before the release phase stops it. */
  stoppedDatabase?: string;
}

const file = journalFile<StagingJournal>({
  fileName: 'staging.json',
  title: 'the staging journal',
  records: 'the slot an interrupted deployment was building',
  valid: (j) => {
    const journal = j as Partial<StagingJournal>;
    return typeof journal.project === 'string' && Array.isArray(journal.folders) && Array.isArray(journal.containers);
  },
  repair:
    'Remove the slot it names by hand if it is not live (docker compose -p PROJECT down -v, and its data folder), then remove the file.',
});

/** The journal of a slot a run was building and did not finish with, or undefined. */
export const readStagingJournal = file.read;
/** Writes the journal atomically and durably (0600). */
export const writeStagingJournal = file.write;
/** Removes the journal: the slot is gone, or live. */
export const removeStagingJournal = file.remove;

/**
 * What the next run does with a journalled slot: keep it when it serves or may be rolled back to
 * (state.json names it, or a container of its project holds a canonical name: a switch finished
 * before state.json was written), otherwise remove it. `projectOf` maps each existing container's
 * name to its compose project.
 */
export function stagedSlotFate(
  journal: StagingJournal,
  state: DeployState,
  projectOf: Map<string, string | undefined>,
): 'keep' | 'remove' {
  const recorded = [state.live?.project, state.previous?.project].includes(journal.project);
  const switched = journal.containers.some((c) => projectOf.get(c.canonicalName) === journal.project);
  return recorded || switched ? 'keep' : 'remove';
}
