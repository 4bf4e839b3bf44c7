// The online fill of a new slot: PostgreSQL's own logical replication from the live database
// (publication) into the new one (subscription, connected through the live slot's socket folder
// mounted into the new database's container), while the game runs. The tool only creates,
// watches and drops these objects; it never decodes or replays a change itself.
import { alterDatabaseSql, createDatabaseSql, recordDatabaseProperties } from '../dump/database-properties.ts';
import { CliError, errorText } from '../errors.ts';
import {
  combineFingerprint,
  compareFingerprints,
  currentAlgorithm,
  type Fingerprint,
  fingerprintSessionSettings,
  fingerprintTables,
  parseExclusions,
  quoteIdent,
  readSequences,
  type TableFingerprint,
  notExtensionOwned,
  userTablesFrom,
} from '../dump/fingerprint.ts';
import { type PreProof, type ProofSide, readMarks, tableKey, unchangedTables } from './staged-proof.ts';
import type { Logger } from '../log.ts';
import { PsqlSession, sessionSql, type Sql } from '../host/psql-session.ts';
import { adminSql, oneShotSql, type RestoreTarget } from '../restore/attempt.ts';
import type { Shell } from '../host/shell.ts';
import type { Duration } from 'zx/core';
import { liveSocketPath, socketDirs } from './slot-online.ts';
import {
  type Identity,
  readReplicationJournal,
  removeReplicationJournal,
  writeReplicationJournal,
} from './replication-journal.ts';
import { acquireLock, LockHeldError } from '../host/lock.ts';

const literal = (text: string) => `'${text.replace(/'/g, "''")}'`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Replication objects of this tool are named with this prefix (a later run sweeps leftovers by it). */
export const replicationPrefix = 'planetarion_deploy_';
/** The lag under which the writers are stopped: the rest is replayed during the freeze. */
const smallLagBytes = 16 * 1024 * 1024;

/** Where a subscription is (see Replication.position). */
interface SubscriptionPosition {
  lag: number | undefined;
  measures: Record<string, number>;
  doing: string;
}

/** How long the measures of a subscription's progress have not gone past their best. */
class StallWatch {
  private readonly best = new Map<string, number>();
  private since = Date.now();

  stalledFor(measures: Record<string, number>): number {
    for (const [name, value] of Object.entries(measures)) {
      if (value > (this.best.get(name) ?? -1)) {
        this.best.set(name, value);
        this.since = Date.now();
      }
    }
    return Date.now() - this.since;
  }
}

/** Whether the live database can be the publisher of an online fill, and why not. */
export type OnlineCheck = { online: true; socketVolume: string } | { online: false; reason: string };

/** SQL in one database of a container (adminSql runs on the maintenance database). */
export async function databaseSql(
  $: Shell,
  target: RestoreTarget,
  sql: string,
  timeout: Duration = '120s',
): Promise<string> {
  const out = await $({
    input: sql,
    nothrow: true,
    timeout,
  })`${target.docker} exec -i ${target.container} psql -X -q -A -t -v ON_ERROR_STOP=1 -U ${target.user} -d ${target.database}`;
  if (out.exitCode !== 0)
    throw new CliError(
      `SQL in '${target.container}' (${target.database}) failed: ${out.stderr.trim() || `exit ${out.exitCode}`}`,
    );
  return out.stdout.trim();
}

/** Statements for the live and the new database, each in a session or a docker exec of its own. */
interface Sides {
  live: Sql;
  next: Sql;
}

/** A docker exec psql per statement on the target's database. */
const oneDatabaseSql =
  ($: Shell, target: RestoreTarget): Sql =>
  (sql) =>
    databaseSql($, target, sql);

/** The freeze's sessions, each ready (the proof's settings applied) once its promise resolves. */
interface FreezeSessions {
  live: Promise<PsqlSession>;
  next: Promise<PsqlSession>;
}

/** A session with the fingerprint's settings applied; killed if they fail. */
async function openReady(target: RestoreTarget): Promise<PsqlSession> {
  const session = PsqlSession.open(target);
  try {
    await session.query(fingerprintSessionSettings);
    return session;
  } catch (error) {
    session.kill();
    throw error;
  }
}

/** The live database's socket folder volume and wal_level: both are needed for the online fill. */
export async function checkOnline($: Shell, live: RestoreTarget): Promise<OnlineCheck> {
  const out = await $({
    nothrow: true,
    timeout: '30s',
  })`${live.docker} container inspect --format ${'{{json .Mounts}}'} ${live.container}`;
  const mounts =
    out.exitCode === 0 ? (JSON.parse(out.stdout) as Array<{ Type: string; Name?: string; Destination: string }>) : [];
  const socket = mounts.find((m) => socketDirs.includes(m.Destination.replace(/\/+$/, '')));
  const later = 'the next deployment will be online (this one gives the new slot both)';
  if (socket?.Type !== 'volume' || !socket.Name) {
    return {
      online: false,
      reason: `the live database's socket folder is ${socket ? `a ${socket.Type} mount` : 'not mounted'}, not a named volume the new database could mount; ${later}`,
    };
  }
  const facts = onlineFacts(await databaseSql($, live, onlineFactsQuery).catch((error: unknown) => errorText(error)));
  if (facts.unread !== undefined)
    return { online: false, reason: `the live database's wal_level could not be read (${facts.unread})` };
  if (facts.wal !== 'logical')
    return { online: false, reason: `the live database runs with wal_level=${facts.wal}, not logical; ${later}` };
  if (facts.notCopied) return { online: false, reason: facts.notCopied };
  return { online: true, socketVolume: socket.Name };
}

/**
 * wal_level, and what logical replication does not carry while the offline fill's dump does:
 * large objects, the rows of materialized views (the schema creates them WITH NO DATA) and of
 * unlogged tables; what an extension owns is the extension's (as for the fingerprint). One psql,
 * in the live database.
 */
export const onlineFactsQuery = `SELECT current_setting('wal_level') || ' ' || (SELECT count(*) FROM pg_largeobject_metadata) || ' ' || (SELECT count(*) FROM pg_class c WHERE c.relkind = 'm' AND c.relispopulated AND ${notExtensionOwned}) || ' ' || (SELECT count(*) ${userTablesFrom} AND c.relpersistence = 'u');`;

/**
 * Under the freeze: what logical replication does not copy, come into the live database during
 * the copy (the plan found none), fails the proof, which compares tables and sequences only.
 */
async function checkNothingUncopied(live: PsqlSession): Promise<void> {
  const { notCopied } = onlineFacts((await live.query(onlineFactsQuery))[0]?.join(' ') ?? '');
  if (notCopied)
    throw new CliError(`${notCopied}; it came during the copy, so the online copy is not complete`, {
      advice:
        'The live deployment is serving as before. Deploy again: the fill is then offline (a fresh dump carries them).',
    });
}

/** onlineFactsQuery's answer read: wal_level, why the online fill cannot copy everything, or what answered instead (unread). Pure. */
export function onlineFacts(answer: string): { wal: string; notCopied: string | undefined; unread?: string } {
  const facts = /^(\w+) (\d+) (\d+) (\d+)$/.exec(answer.trim());
  if (!facts) return { wal: 'unknown', notCopied: undefined, unread: answer.trim() || 'no answer' };
  const [largeObjects, views, unlogged] = facts.slice(2).map(Number) as [number, number, number];
  const found = [
    largeObjects ? `${largeObjects} large object${largeObjects === 1 ? '' : 's'}` : '',
    views ? `${views} populated materialized view${views === 1 ? '' : 's'}` : '',
    unlogged ? `${unlogged} unlogged table${unlogged === 1 ? '' : 's'}` : '',
  ].filter(Boolean);
  return {
    wal: facts[1]!,
    notCopied: found.length
      ? `the live database holds ${found.join(', ')}, which logical replication does not copy`
      : undefined,
  };
}

/**
 * One online fill, from the publication to the drop of every object it made. What it created is
 * recorded as it goes, so dropAll() (success and every abort path) removes exactly that.
 */
export class Replication {
  readonly name: string;
  private subscriptionId: string | undefined;
  private created = { publication: false, subscription: false };
  identities: Identity[] = [];
  fingerprint: string | undefined;
  private preProof: PreProof | undefined;
  private frozen: FreezeSessions | undefined;

  constructor(
    private readonly $: Shell,
    private readonly live: RestoreTarget,
    private readonly next: RestoreTarget,
    slotId: string,
    private readonly log: Logger,
    /** The deployment folder: the replication journal is kept under it. */
    private readonly dir: string,
    /** Seconds without progress of the copy or catch-up after which the deployment is aborted. */
    private readonly stallSeconds: number,
  ) {
    this.name = `${replicationPrefix}${slotId.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`;
  }

  /** The new database like the live one (properties and whole schema), the live keyless tables made publishable. */
  async prepare(): Promise<void> {
    await sweepLeftovers(this.$, this.live, this.log);
    const properties = await recordDatabaseProperties(this.$, this.live, this.log);
    const db = quoteIdent(this.next.database);
    await adminSql(
      this.$,
      this.next,
      `DROP DATABASE IF EXISTS ${db} WITH (FORCE); ${createDatabaseSql(this.next.database, properties)}${properties ? `\n${alterDatabaseSql(this.next.database, properties)}` : ''}`,
    );
    // The whole schema, indexes and keys included: the subscriber finds the rows an UPDATE or
    // DELETE names by its key, and the copy stays correct without a post-data step.
    const schema = await this.$({
      nothrow: true,
      timeout: '600s',
    })`${this.live.docker} exec ${this.live.container} pg_dump --no-password --schema-only --no-publications --no-subscriptions -U ${this.live.user} -d ${this.live.database}`;
    if (schema.exitCode !== 0)
      throw new CliError(`pg_dump --schema-only of the live database failed: ${schema.stderr.trim()}`);
    await databaseSql(this.$, this.next, schema.stdout, '600s');
    this.log.info(`Schema of '${this.live.database}' loaded into ${this.next.container}`);
    await this.makeKeylessPublishable();
  }

  /** REPLICA IDENTITY FULL on tables without a key or identity: a publication would make their UPDATE and DELETE fail. */
  private async makeKeylessPublishable(): Promise<void> {
    const rows = await databaseSql(
      this.$,
      this.live,
      `
      SELECT format('%I.%I', n.nspname, c.relname), c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
        AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)));`,
    );
    this.identities = rows
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split('|') as [string, string])
      .map(([table, kind]) => ({ table, old: kind === 'n' ? 'NOTHING' : 'DEFAULT' }));
    // Journalled first: a run killed after any ALTER (even by SIGKILL) is put back by the next run.
    this.journal();
    for (const { table } of this.identities)
      await databaseSql(this.$, this.live, `SET lock_timeout = '10s'; ALTER TABLE ${table} REPLICA IDENTITY FULL;`);
    if (this.identities.length)
      this.log.info(
        `REPLICA IDENTITY FULL for the deployment on the tables without a key: ${this.identities.map((i) => i.table).join(', ')}`,
      );
  }

  /** Publication on the live database, subscription with the initial copy on the new one. */
  async subscribe(): Promise<void> {
    const name = quoteIdent(this.name);
    this.created.publication = true;
    await databaseSql(this.$, this.live, `CREATE PUBLICATION ${name} FOR ALL TABLES;`);
    const port = await adminSql(this.$, this.live, 'SHOW port;');
    const connection = `host=${liveSocketPath} port=${port} user=${this.live.user} dbname=${this.live.database}`;
    this.created.subscription = true;
    await databaseSql(
      this.$,
      this.next,
      `CREATE SUBSCRIPTION ${name} CONNECTION ${literal(connection)} PUBLICATION ${name} WITH (copy_data = true);`,
    );
    this.subscriptionId = await databaseSql(
      this.$,
      this.next,
      `SELECT oid FROM pg_subscription WHERE subname = ${literal(this.name)};`,
    );
    this.journal();
    this.log.info(
      `Subscription ${this.name}: ${this.next.container} copies '${this.live.database}' from ${this.live.container} through its socket folder while the game runs`,
    );
  }

  /** Throws when the subscription's workers have failed (they would retry forever). */
  private async checkErrors(errors: number): Promise<void> {
    if (errors > 0) {
      const last = await this.lastWorkerErrors();
      throw new CliError(`the subscription in ${this.next.container} failed: ${last || `${errors} error(s)`}`, {
        advice:
          'The live deployment is serving as before. A schema change during the copy, or a table the new database cannot take, stops the online fill; deploy again, or with --offline.',
      });
    }
  }

  /** The last ERROR lines of the new database's log (its subscription workers log there, and nowhere else). */
  private async lastWorkerErrors(): Promise<string> {
    const logs = await this.$({
      nothrow: true,
      timeout: '30s',
    })`${this.next.docker} logs --tail 50 ${this.next.container}`;
    return `${logs.stdout}\n${logs.stderr}`
      .split('\n')
      .filter((l) => /ERROR/.test(l))
      .slice(-2)
      .join(' | ');
  }

  /**
   * Where the subscription is: its lag behind `upTo` in bytes of WAL (undefined while tables are
   * being copied, or while it is not connected), and the measures of its progress: tables copied
   * and bytes written into the ones being copied during the copy; the live WAL replayed after it.
   */
  private async position(
    upTo = 'pg_current_wal_lsn()',
    sides: Sides = { live: oneDatabaseSql(this.$, this.live), next: oneDatabaseSql(this.$, this.next) },
  ): Promise<SubscriptionPosition> {
    // One statement per database and round: under the freeze, in sessions already open.
    const [errors, copying, ready, bytes, pending] = (
      await sides.next(
        `SELECT (SELECT coalesce(sum(apply_error_count + sync_error_count), 0) FROM pg_stat_subscription_stats WHERE subname = ${literal(this.name)}),
          count(*) FILTER (WHERE srsubstate NOT IN ('r', 's')), count(*) FILTER (WHERE srsubstate IN ('r', 's')),
          coalesce(sum(pg_table_size(srrelid)) FILTER (WHERE srsubstate NOT IN ('r', 's')), 0),
          coalesce(string_agg(srrelid::regclass::text, ', ') FILTER (WHERE srsubstate NOT IN ('r', 's')), '')
        FROM pg_subscription_rel WHERE srsubid = ${Number(this.subscriptionId)};`,
      )
    ).split('|') as [string, string, string, string, string];
    await this.checkErrors(Number(errors));
    if (Number(copying) > 0)
      return {
        lag: undefined,
        measures: { ready: Number(ready), bytes: Number(bytes) },
        doing: `copying ${pending}, ${ready} of ${Number(ready) + Number(copying)} tables done`,
      };
    // pg_stat_replication is the same in every database of the server: the fence's admin session may ask.
    const [lag, replayed] = (
      await sides.live(
        `SELECT pg_wal_lsn_diff(${upTo}, replay_lsn), pg_wal_lsn_diff(replay_lsn, '0/0') FROM pg_stat_replication WHERE application_name = ${literal(this.name)};`,
      )
    ).split('|');
    if (!lag) return { lag: undefined, measures: {}, doing: 'waiting for its connection to the live database' };
    return { lag: Math.max(0, Number(lag)), measures: { replayed: Number(replayed) }, doing: 'catching up' };
  }

  /** Throws when the subscription has made no progress for the stall limit: it would be waited for forever. */
  private async checkStall(watch: StallWatch, position: SubscriptionPosition): Promise<void> {
    const stalledMs = watch.stalledFor(position.measures);
    if (stalledMs < this.stallSeconds * 1000) return;
    const last = await this.lastWorkerErrors();
    throw new CliError(
      `the online copy made no progress for ${this.stallSeconds} s (subscription ${this.name} ${position.doing}): ${last ? `its last errors: ${last}` : 'its workers logged no error'}`,
      {
        advice: `The live deployment is serving as before. Check the new database's log for the cause; if the copy is only slow, raise PLANETARION_REPLICATION_STALL (now ${this.stallSeconds} s), or deploy with --offline.`,
      },
    );
  }

  /** Waits until every table is copied and the subscription is at most a little behind. */
  async waitCopied(abort: AbortSignal | undefined): Promise<void> {
    const watch = new StallWatch();
    let reported = Date.now();
    for (;;) {
      abort?.throwIfAborted();
      const position = await this.position();
      if (position.lag !== undefined && position.lag <= smallLagBytes) break;
      await this.checkStall(watch, position);
      if (Date.now() - reported > 10_000) {
        reported = Date.now();
        this.log.info(
          position.lag === undefined
            ? `Subscription ${this.name}: ${position.doing}`
            : `Subscription ${this.name}: ${Math.round(position.lag / 1024)} kB behind`,
        );
      }
      await sleep(250);
    }
    this.log.info(`Subscription ${this.name}: every table copied, the new database follows the live one`);
  }

  /** Waits until the subscription has replayed the live database's WAL up to a position. */
  private async waitReplayed(upTo: string, abort: AbortSignal | undefined, sides?: Sides): Promise<void> {
    const watch = new StallWatch();
    for (;;) {
      abort?.throwIfAborted();
      const position = await this.position(`${literal(upTo)}::pg_lsn`, sides);
      if (position.lag === 0) return;
      await this.checkStall(watch, position);
      await sleep(100);
    }
  }

  /**
   * Under the freeze: waits until the subscription has replayed the live database's final WAL
   * position. `liveSql` asks the live server in a session already open (the fence's).
   */
  async waitFinal(abort: AbortSignal | undefined, liveSql: Sql): Promise<void> {
    const frozen = this.freezeSessions();
    const final = await liveSql('SELECT pg_current_wal_lsn();');
    await this.waitReplayed(final, abort, { live: liveSql, next: sessionSql(await frozen.next) });
    this.log.info(`Subscription ${this.name}: replayed the live database up to its final position ${final}`);
  }

  /** Sequences are not replicated: each one's value is set on the new database from the frozen live one. */
  async copySequences(): Promise<void> {
    const frozen = this.freezeSessions();
    const sequences = await readSequences(await frozen.live);
    const statements = sequences.map((s) => `SELECT setval(${literal(s.name)}, ${s.value}, ${s.isCalled});`);
    if (statements.length) await (await frozen.next).query(statements.join('\n'));
    this.log.info(`Copied ${sequences.length} sequence value(s) to the new database`);
  }

  /**
   * The sessions of the catch-up, the sequences and the proof under the freeze, one on each
   * database, opened once (each docker exec there is downtime) and kept until the proof ends or
   * abandon(). Opened once the fence is up: raising it ends every other session of the live
   * database.
   */
  private freezeSessions(): FreezeSessions {
    if (!this.frozen) {
      this.frozen = { live: openReady(this.live), next: openReady(this.next) };
      // Each is awaited where it is used; one failing before that must not be an unhandled rejection.
      this.frozen.live.catch(() => {});
      this.frozen.next.catch(() => {});
    }
    return this.frozen;
  }

  /** Ends the freeze's sessions; `kill` on abort paths (nothing is waited for). */
  private async endFreezeSessions(how: 'close' | 'kill'): Promise<void> {
    const frozen = this.frozen;
    this.frozen = undefined;
    if (!frozen) return;
    const sessions = await Promise.allSettled([frozen.live, frozen.next]);
    await Promise.all(
      sessions.map((s) =>
        s.status === 'fulfilled' ? (how === 'close' ? s.value.close() : s.value.kill()) : undefined,
      ),
    );
  }

  /**
   * While the game runs (staged-proof.ts): every table's marks and fingerprint on the live
   * database, then, once the subscription has replayed past them, on the new one. Without
   * trustworthy counts on either side, nothing is kept and the proof runs whole under the freeze.
   */
  async preProve(exclude: string, abort: AbortSignal | undefined): Promise<void> {
    const exclusions = parseExclusions(exclude);
    // A failure here (a table dropped meanwhile, a lock conflict with the game) only costs the
    // pre-proof: the freeze then proves every table. One statement per table, so the game waits
    // behind no more than one table's read for a TRUNCATE or an ALTER.
    const side = async (target: RestoreTarget, expected: string[] = []): Promise<ProofSide | string> => {
      const session = PsqlSession.open(target);
      try {
        await session.query(fingerprintSessionSettings);
        const reading = await readMarks(session, { expected });
        if ('untrusted' in reading) return reading.untrusted;
        const { tables } = await fingerprintTables(session, exclusions, currentAlgorithm, { perTable: true });
        return { marks: reading.marks, tables: new Map(tables.map((t) => [tableKey(t), t])) };
      } catch (error) {
        abort?.throwIfAborted();
        return errorText(error);
      } finally {
        await session.close();
      }
    };
    const live = await side(this.live);
    if (typeof live === 'string') return this.log.info(`No pre-proof (${live}): the whole proof runs under the freeze`);
    await this.waitReplayed(await databaseSql(this.$, this.live, 'SELECT pg_current_wal_lsn();'), abort);
    const next = await side(this.next, ['logical replication worker']);
    if (typeof next === 'string') return this.log.info(`No pre-proof (${next}): the whole proof runs under the freeze`);
    this.preProof = { live, next };
    this.log.info(
      `Pre-proof while the game runs: ${live.tables.size} tables fingerprinted on both databases; under the freeze only the tables written to since are fingerprinted again`,
    );
  }

  /**
   * Under the freeze, after the final catch-up: the subscription's worker stopped (its counts
   * complete), the tables neither database has written to since the pre-proof, whose digests
   * it keeps; none without a pre-proof or trustworthy counts.
   */
  private async unchangedSincePreProof(
    sessions: [PsqlSession, PsqlSession],
    endedPids: number[],
  ): Promise<Set<string>> {
    const pre = this.preProof;
    if (!pre) return new Set();
    if (!(await this.stopSubscriptionWorker(sessions[1]))) {
      this.log.info(
        "The pre-proof is not used (the subscription's worker was still running 30 s after DISABLE): every table is fingerprinted under the freeze",
      );
      return new Set();
    }
    const [live, next] = await Promise.all([readMarks(sessions[0], { pids: endedPids }), readMarks(sessions[1])]);
    if ('untrusted' in live || 'untrusted' in next) {
      const why = 'untrusted' in live ? live.untrusted : (next as { untrusted: string }).untrusted;
      this.log.info(`The pre-proof is not used (${why}): every table is fingerprinted under the freeze`);
      return new Set();
    }
    return unchangedTables(pre, live.marks, next.marks);
  }

  /**
   * Disables the subscription (the final position is replayed: nothing is left to apply) and
   * waits until its worker has exited, in the new database's proof session (each docker exec
   * is downtime under the freeze). pg_stat_subscription forgets the worker before it has flushed
   * its counts and left pg_stat_activity, so the wait is for the latter. False when it is still
   * there after 30 s: the counts are then not trusted.
   *
   * An idle apply worker only rereads its subscription when it wakes, once a second with nothing
   * to apply (and the fence lets nothing through), so after the DISABLE it is told to stop at
   * once: it exits through PostgreSQL's FATAL path (one FATAL line in the server log per online
   * deployment), which flushes its counts before it leaves pg_stat_activity, and, disabled, is
   * not restarted.
   */
  private async stopSubscriptionWorker(session: PsqlSession): Promise<boolean> {
    await session.query(`ALTER SUBSCRIPTION ${quoteIdent(this.name)} DISABLE;`);
    await session.query(
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_subscription WHERE subid = ${Number(this.subscriptionId)} AND pid IS NOT NULL;`,
    );
    const deadline = Date.now() + 30_000;
    for (;;) {
      const [[running]] = (await session.query(
        `SELECT (SELECT count(*) FROM pg_stat_subscription WHERE subid = ${Number(this.subscriptionId)} AND pid IS NOT NULL)
          + (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication worker'
              AND datid = (SELECT oid FROM pg_database WHERE datname = current_database()));`,
      )) as [[string]];
      if (running === '0') return true;
      if (Date.now() > deadline) return false;
      await sleep(20);
    }
  }

  /**
   * The fingerprint of the frozen live database against the new one; a difference (a lost
   * change, DDL during the copy) aborts. The tables the pre-proof still covers keep its digests.
   */
  async prove(exclude: string, endedPids: number[] = []): Promise<void> {
    const exclusions = parseExclusions(exclude);
    const frozen = this.freezeSessions();
    let unchanged: Set<string>;
    let live: Fingerprint;
    let next: Fingerprint;
    try {
      const sessions: [PsqlSession, PsqlSession] = [await frozen.live, await frozen.next];
      await checkNothingUncopied(sessions[0]);
      unchanged = await this.unchangedSincePreProof(sessions, endedPids);
      const take = async (session: PsqlSession, kept: Map<string, TableFingerprint> | undefined) => {
        const { tables, excluded } = await fingerprintTables(session, exclusions, currentAlgorithm, {
          select: (t) => !unchanged.has(tableKey(t)),
        });
        const sequences = await readSequences(session);
        return combineFingerprint([...tables, ...[...unchanged].map((key) => kept!.get(key)!)], sequences, excluded);
      };
      [live, next] = await Promise.all([
        take(sessions[0], this.preProof?.live.tables),
        take(sessions[1], this.preProof?.next.tables),
      ]);
    } finally {
      await this.endFreezeSessions('close');
    }
    const differences = compareFingerprints(live, next);
    if (differences.length || live.sha256 !== next.sha256) {
      const names = differences
        .slice(0, 5)
        .map((d) => `${d.kind} ${d.name}`)
        .join(', ');
      throw new CliError(
        `the new database's fingerprint differs from the frozen live database's (${names || 'structure'}): the online copy is not proven`,
        {
          advice:
            'The live deployment is serving as before. A schema change on the live database during the copy is not replicated; deploy again (or with --offline).',
        },
      );
    }
    this.fingerprint = next.sha256;
    const again = next.tables.length - unchanged.size;
    this.log.info(
      `Fingerprint proven: ${next.sha256} (${next.tables.length} tables, ${next.sequences.length} sequences) on both databases; ${
        this.preProof
          ? `${again} table(s) fingerprinted again under the freeze${
              again
                ? ` (${next.tables
                    .filter((t) => !unchanged.has(tableKey(t)))
                    .map((t) => `${t.schema}.${t.table}`)
                    .join(', ')})`
                : ''
            }, ${unchanged.size} unchanged since the pre-proof`
          : 'every table fingerprinted under the freeze'
      }`,
    );
  }

  /**
   * Drops subscription, then replication slots and publication at once (what exists of them);
   * the identities are put back by restoreIdentities. `liveAdminSql` drops the slots in a session
   * already open (the fence's) instead of a docker exec.
   */
  async dropObjects(liveAdminSql: Sql = oneShotSql(this.$, this.live)): Promise<void> {
    const name = quoteIdent(this.name);
    if (this.created.subscription) {
      await dropSubscription(this.$, this.next, this.name).catch((error: unknown) =>
        this.log.warn(
          `Could not drop the subscription in ${this.next.container} (the slot is removed anyway): ${errorText(error)}`,
        ),
      );
    }
    // Both settle before either failure is thrown: an abandon() after it never runs beside them.
    const outcomes = await Promise.allSettled([
      dropSlots(liveAdminSql, slotsOf(this.name, this.subscriptionId)),
      this.created.publication ? databaseSql(this.$, this.live, `DROP PUBLICATION IF EXISTS ${name};`) : undefined,
    ]);
    const failed = outcomes.find((outcome) => outcome.status === 'rejected');
    if (failed) throw failed.reason;
    this.created = { publication: false, subscription: false };
  }

  /** Records what this fill changes outside its slot (before it changes it), for the next run's reconciliation. */
  private journal(): void {
    writeReplicationJournal(this.dir, {
      name: this.name,
      live: this.live.container,
      user: this.live.user,
      database: this.live.database,
      next: this.next.container,
      ...(this.subscriptionId ? { subscriptionId: this.subscriptionId } : {}),
      identities: this.identities,
    });
  }

  /** Everything is put back: the journal goes. */
  forget(): void {
    removeReplicationJournal(this.dir);
  }

  /** The statements that put back the identities set for the deployment. */
  identitySql(): string {
    return identitySql(this.identities);
  }

  /** Puts back the identities in a session of its own (no fence holds the tables). */
  async restoreIdentities(): Promise<void> {
    if (!this.identities.length) return;
    await databaseSql(this.$, this.live, this.identitySql());
    this.log.info(`REPLICA IDENTITY put back on ${this.identities.map((i) => `${i.table} (${i.old})`).join(', ')}`);
    this.identities = [];
  }

  /** Every abort path: drops what exists and puts the identities back; logs what it could not do, never throws. */
  async abandon(): Promise<void> {
    await this.endFreezeSessions('kill');
    let complete = true;
    await this.dropObjects().catch((error: unknown) => {
      complete = false;
      this.log.error(
        `Could not drop the replication objects ${this.name}: ${errorText(error)} — on ${this.live.container} run: SELECT pg_drop_replication_slot('${this.name}'); DROP PUBLICATION ${this.name}; (a slot left behind keeps WAL and fills the disk)`,
      );
    });
    await this.restoreIdentities().catch((error: unknown) => {
      complete = false;
      this.log.error(
        `Could not put back REPLICA IDENTITY on ${this.identities.map((i) => i.table).join(', ')}: ${errorText(error)} — run: ${this.identitySql()}`,
      );
    });
    // What could not be put back stays journalled: the next run retries it.
    if (complete) this.forget();
  }
}

/** Replication slots and publications of this tool on the live database (a run was killed before dropping them); empty when it cannot be asked. */
export async function replicationLeftovers($: Shell, live: RestoreTarget): Promise<string[]> {
  const prefix = literal(`${replicationPrefix.replace(/_/g, '\\_')}%`);
  const slots = await adminSql(
    $,
    live,
    `SELECT format('replication slot %s (keeps %s MB of WAL)', slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint / 1048576) FROM pg_replication_slots WHERE slot_name LIKE ${prefix} OR slot_name LIKE 'pg\\_%\\_sync\\_%';`,
  ).catch(() => '');
  const publications = await databaseSql(
    $,
    live,
    `SELECT format('publication %s', pubname) FROM pg_publication WHERE pubname LIKE ${prefix};`,
  ).catch(() => '');
  return [...slots.split('\n'), ...publications.split('\n')].filter(Boolean);
}

/** The slots of one fill: the subscription's and its table copies' (named after the subscription's oid). */
const slotsOf = (name: string, subscriptionId: string | undefined) =>
  `(slot_name = ${literal(name)}${subscriptionId ? ` OR slot_name LIKE ${literal(`pg\\_${Number(subscriptionId)}\\_sync\\_%`)}` : ''})`;

/** Drops the live side's replication slots a condition names, their senders ended first; returns their names. */
async function dropSlots(liveAdminSql: Sql, where: string): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      const dropped = await liveAdminSql(
        `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE ${where} AND active_pid IS NOT NULL;
        SELECT slot_name, pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE ${where};`,
      );
      return dropped
        .split('\n')
        .filter((l) => l.includes('|'))
        .map((l) => l.split('|')[0]!);
    } catch (error) {
      // A sender that was just ended may still hold its slot for a moment.
      if (attempt >= 20) throw error;
      await sleep(250);
    }
  }
}

/** Drops a subscription, detached from its slot first: the slot is dropped on the live side whatever the new server's state. */
async function dropSubscription($: Shell, next: RestoreTarget, subscription: string): Promise<void> {
  const name = quoteIdent(subscription);
  await databaseSql(
    $,
    next,
    `ALTER SUBSCRIPTION ${name} DISABLE;\nALTER SUBSCRIPTION ${name} SET (slot_name = NONE);\nDROP SUBSCRIPTION ${name};`,
    '60s',
  );
}

/** The statements that put back identities; IF EXISTS for a reconciliation (a table may be gone since). */
function identitySql(identities: Identity[], ifExists = false): string {
  return identities
    .map((i) => `ALTER TABLE ${ifExists ? 'IF EXISTS ' : ''}${i.table} REPLICA IDENTITY ${i.old};`)
    .join('\n');
}

/** Leftovers of an earlier run that was killed: its slots and publications would keep WAL forever. */
async function sweepLeftovers($: Shell, live: RestoreTarget, log: Logger, subscriptionId?: string): Promise<void> {
  const prefix = literal(`${replicationPrefix.replace(/_/g, '\\_')}%`);
  const slots = await dropSlots(
    oneShotSql($, live),
    `(slot_name LIKE ${prefix}${subscriptionId ? ` OR ${slotsOf('', subscriptionId)}` : ''})`,
  );
  const publications = await databaseSql($, live, `SELECT pubname FROM pg_publication WHERE pubname LIKE ${prefix};`);
  for (const pub of publications.split('\n').filter(Boolean))
    await databaseSql($, live, `DROP PUBLICATION IF EXISTS ${quoteIdent(pub)};`);
  const dropped = [...slots, ...publications.split('\n').filter(Boolean)];
  if (dropped.length)
    log.warn(
      `Dropped the replication leftovers of an interrupted deployment on ${live.container}: ${dropped.join(', ')}`,
    );
}

/**
 * The reconciliation at the start of a run: an online fill that was killed (SIGKILL, power loss)
 * left its journal; its subscription (in the new slot's database, if that still runs) is dropped,
 * its slots and publication on the live database, and the live tables get their identity back.
 */
export async function reconcileReplication($: Shell, docker: string, dir: string, log: Logger): Promise<void> {
  const journal = readReplicationJournal(dir);
  if (!journal) return;
  const live: RestoreTarget = { docker, container: journal.live, user: journal.user, database: journal.database };
  log.warn(
    `Found the replication journal of an interrupted online deployment (${journal.name}): dropping its objects, putting back REPLICA IDENTITY`,
  );
  const running = await $({
    nothrow: true,
    timeout: '30s',
  })`${docker} container inspect --format ${'{{.State.Running}}'} ${journal.next}`;
  let subscriptionId = journal.subscriptionId;
  if (running.stdout.trim() === 'true') {
    const next = { ...live, container: journal.next };
    try {
      // Killed before it journalled the oid, the slots of its table copies are named after it all the same.
      const oid = await databaseSql(
        $,
        next,
        `SELECT oid FROM pg_subscription WHERE subname = ${literal(journal.name)};`,
      );
      subscriptionId ||= oid;
      if (oid) await dropSubscription($, next, journal.name);
    } catch (error) {
      log.warn(`Could not drop the subscription ${journal.name} in ${journal.next}: ${errorText(error)}`);
    }
  }
  await sweepLeftovers($, live, log, subscriptionId || undefined);
  if (journal.identities.length) {
    await databaseSql($, live, `SET lock_timeout = '10s';\n${identitySql(journal.identities, true)}`);
    log.info(
      `REPLICA IDENTITY put back on ${journal.identities.map((i) => `${i.table} (${i.old})`).join(', ')} in ${journal.live}`,
    );
  }
  removeReplicationJournal(dir);
}

/** The reconciliation for a run that does not hold the lock (--status): skipped while another run holds it. */
export async function reconcileReplicationIfIdle(
  $: Shell,
  docker: string,
  dir: string,
  log: Logger,
  command: string,
): Promise<'none' | 'busy' | 'reconciled' | 'failed'> {
  if (!readReplicationJournal(dir)) return 'none';
  let lock: ReturnType<typeof acquireLock>;
  try {
    lock = acquireLock(dir, `${command} (putting back an interrupted online deployment)`);
  } catch (error) {
    if (error instanceof LockHeldError) return 'busy';
    throw error;
  }
  try {
    await reconcileReplication($, docker, dir, log);
    return 'reconciled';
  } catch (error) {
    // A report must not fail for it: the journal stays, and the next run tries again.
    log.error(`Could not put back the interrupted online deployment: ${errorText(error)}`);
    return 'failed';
  } finally {
    lock.release();
  }
}
