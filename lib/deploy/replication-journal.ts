// The replication journal, `<dir>/deploy/replication.json`: what an online fill changed outside
// its own slot (REPLICA IDENTITY FULL on the live tables without a key, a publication and
// replication slots on the live database, a subscription in the new one). Written (atomically,
// fsynced) before the first of those changes, so a run killed by SIGKILL or a power loss leaves a
// record; every later deploy-to-qnap run (and an idle --status) puts it all back at its start.
import { readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic } from '../host/atomic-file.ts';
import { deployDirName } from './state.ts';
import { CliError } from '../errors.ts';

/** A live table whose identity was set to FULL for the fill, with the one to put back. */
export interface Identity {
  table: string;
  old: 'DEFAULT' | 'NOTHING';
}

export interface ReplicationJournal {
  /** The publication's, subscription's and replication slot's name. */
  name: string;
  /** The live database's container, its user and database; the new slot's database container. */
  live: string;
  user: string;
  database: string;
  next: string;
  /** The subscription's oid in the new database, once made (its table copies' slots carry it). */
  subscriptionId?: string;
  identities: Identity[];
}

export const replicationJournalName = 'replication.json';
const path = (dir: string) => join(dir, deployDirName, replicationJournalName);

/** The journal of an online fill that did not put everything back, or undefined. */
export function readReplicationJournal(dir: string): ReplicationJournal | undefined {
  let text: string;
  try {
    text = readFileSync(path(dir), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CliError(`cannot read the replication journal ${path(dir)}: ${(error as Error).message}`, {
      advice: 'Check the file and its permissions; it records what an interrupted online deployment changed.',
    });
  }
  try {
    const journal = JSON.parse(text) as ReplicationJournal;
    if (journal.identities.every((i) => i.old === 'DEFAULT' || i.old === 'NOTHING')) return journal;
  } catch {
    // reported below
  }
  throw new CliError(`the replication journal ${path(dir)} is corrupt`, {
    advice: `Drop the publication and replication slots named planetarion_deploy_* on the live database, put back REPLICA IDENTITY on its tables without a key, then remove the file.`,
  });
}

/** Writes the journal atomically and durably (0600). */
export function writeReplicationJournal(dir: string, journal: ReplicationJournal): void {
  writeFileAtomic(path(dir), `${JSON.stringify(journal, null, 2)}\n`);
}

/** Removes the journal once everything it records is put back. */
export function removeReplicationJournal(dir: string): void {
  try {
    unlinkSync(path(dir));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  fsyncDir(join(dir, deployDirName));
}
