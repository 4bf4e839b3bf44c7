// The replication journal, `<dir>/deploy/replication.json`: what an online fill changed outside
// its own slot (REPLICA IDENTITY FULL on the live tables without a key, a publication and
// replication slots on the live database, a subscription in the new one). Written (atomically,
// fsynced) before the first of those changes, so a run killed by SIGKILL or a power loss leaves a
// record; every later deploy-to-qnap run (and an idle --status) puts it all back at its start.
import { journalFile } from './journal-file.ts';

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

const file = journalFile<ReplicationJournal>({
  fileName: replicationJournalName,
  title: 'the replication journal',
  records: 'what an interrupted online deployment changed',
  valid: (j) => {
    const identities = (j as Partial<ReplicationJournal>).identities;
    return Array.isArray(identities) && identities.every((i) => i.old === 'DEFAULT' || i.old === 'NOTHING');
  },
  repair:
    'Drop the publication and replication slots named planetarion_deploy_* on the live database, put back REPLICA IDENTITY on its tables without a key, then remove the file.',
});

/** The journal of an online fill that did not put everything back, or undefined. */
export const readReplicationJournal = file.read;
/** Writes the journal atomically and durably (0600). */
export const writeReplicationJournal = file.write;
/** Removes the journal once everything it records is put back. */
export const removeReplicationJournal = file.remove;
