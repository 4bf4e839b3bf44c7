// The phases of an online A-B deployment, between staging the new database and starting its
// services: the new database is filled by logical replication and fingerprinted while the game
// runs, and the writers stop only for the final catch-up, the sequences and the proof of what
// was written since (staged-proof.ts).
import type { LiveFence } from './fence.ts';
import type { Replication } from './replication.ts';
import type { Phase } from './run-plan.ts';

/** What the online phases need of the deployment (flow.ts owns the writers, the fence and the rollback). */
export interface OnlineRun {
  replication: Replication;
  liveDb: string;
  newDb: string;
  writers: string[];
  database: string;
  fingerprintExclude: string;
  abort: () => AbortSignal | undefined;
  /** Stops the live writers that run and raises the fence, recording both for the rollback. */
  freeze: () => Promise<LiveFence>;
  /** Writes the copy's dirty page cache to disk (host/flush-writes.ts), so that the freeze does not; an abort stops the wait. */
  flushWrites: (signal: AbortSignal | undefined) => Promise<void>;
}

/** The online phases by name; flow.ts places them (detach goes after the new services start). */
export function onlinePhases(run: OnlineRun): Record<'replicate' | 'freeze' | 'prove' | 'detach', Phase> {
  const r = run.replication;
  let fence: LiveFence | undefined;
  return {
    replicate: {
      name: 'replicate',
      describe: `load the live schema (pg_dump --schema-only) into ${run.newDb}; REPLICA IDENTITY FULL on live tables without a key (put back on every path); publication ${r.name} FOR ALL TABLES on ${run.liveDb}, subscription with copy_data in ${run.newDb} through the live socket folder; wait while the game runs until every table is copied and the lag is small; fingerprint every table on both databases (the pre-proof); write the copy to disk (sync)`,
      run: async () => {
        await r.prepare();
        await r.subscribe();
        await r.waitCopied(run.abort());
        await r.preProve(run.fingerprintExclude, run.abort());
        await run.flushWrites(run.abort());
      },
    },
    freeze: {
      name: 'freeze',
      describe: `stop the live writers (${run.writers.join(', ') || 'none'}) and fence '${run.database}' in ${run.liveDb} (other sessions ended, tables locked against writes until it stops); wait until ${run.newDb} has replayed the live database's final WAL position; copy every sequence value`,
      run: async () => {
        fence = await run.freeze();
        await r.waitFinal(run.abort(), fence.adminSql);
        await r.copySequences();
      },
    },
    prove: {
      name: 'prove',
      describe: `prove the fingerprint of the frozen live database against ${run.newDb}, fingerprinting again only the tables written to or altered since the pre-proof (a difference, such as DDL during the copy: abort)`,
      run: () => r.prove(run.fingerprintExclude, fence?.endedPids),
    },
    detach: {
      name: 'detach',
      describe: `drop subscription ${r.name} in ${run.newDb}, its replication slots and the publication on ${run.liveDb}; put back the tables' REPLICA IDENTITY under the fence`,
      run: async () => {
        await r.dropObjects(fence?.adminSql);
        if (r.identities.length && fence) {
          await fence.commitWithin(r.identitySql());
          r.identities = [];
        }
        r.forget();
      },
    },
  };
}
