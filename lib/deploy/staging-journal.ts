// The staging journal, `<dir>/deploy/staging.json`: the new slot a deployment is building (its
// compose project and file, the folders it created, whether its storage turned out to be the live
// one's). Written before the slot's first container or folder exists and removed when the rollback
// has removed the slot or the switch has made it live, so a run killed by SIGKILL or a power loss
// in between leaves a record; the next deployment removes that slot. Without it, every killed run
// would leave a full copy of the database on the NAS's disk.
import { mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic } from '../host/atomic-file.ts';
import { CliError } from '../errors.ts';
import { deployDirName, type DeployState, type SlotContainer } from './state.ts';

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
}

export const stagingJournalName = 'staging.json';
const path = (dir: string) => join(dir, deployDirName, stagingJournalName);

/** The journal of a slot a run was building and did not finish with, or undefined. */
export function readStagingJournal(dir: string): StagingJournal | undefined {
  let text: string;
  try {
    text = readFileSync(path(dir), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CliError(`cannot read the staging journal ${path(dir)}: ${(error as Error).message}`, {
      advice: 'Check the file and its permissions; it records the slot an interrupted deployment was building.',
    });
  }
  try {
    const journal = JSON.parse(text) as StagingJournal;
    if (typeof journal.project === 'string' && Array.isArray(journal.folders) && Array.isArray(journal.containers))
      return journal;
  } catch {
    // reported below
  }
  throw new CliError(`the staging journal ${path(dir)} is corrupt`, {
    advice:
      'Remove the slot it names by hand if it is not live (docker compose -p PROJECT down -v, and its data folder), then remove the file.',
  });
}

/** Writes the journal atomically and durably (0600). */
export function writeStagingJournal(dir: string, journal: StagingJournal): void {
  mkdirSync(join(dir, deployDirName), { recursive: true, mode: 0o700 });
  writeFileAtomic(path(dir), `${JSON.stringify(journal, null, 2)}\n`);
}

/** Removes the journal: the slot is gone, or live. */
export function removeStagingJournal(dir: string): void {
  try {
    unlinkSync(path(dir));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  fsyncDir(join(dir, deployDirName));
}

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
