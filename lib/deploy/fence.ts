// The live database during a deployment's freeze, and the check that the new slot's server is
// not the live one. Stopping the app containers is not enough: a host cron tick through
// `docker exec psql`, an admin session or another project's worker would keep committing after
// the snapshot, and those rows would be lost at the switch.
import { CliError, errorText } from '../errors.ts';
import { quoteIdent } from '../dump/fingerprint.ts';
import type { Logger } from '../log.ts';
import { PsqlSession, type Sql } from '../host/psql-session.ts';
import { AdminSession, adminSql, type RestoreTarget } from '../restore/attempt.ts';
import type { Shell } from '../host/shell.ts';

const literal = (text: string) => `'${text.replace(/'/g, "''")}'`;

/**
 * The catalogs a write the table locks miss must change: a table (or index, sequence, view)
 * created during the fence is a row in pg_class, a new large object one in
 * pg_largeobject_metadata. Each such write takes ROW EXCLUSIVE on them, which EXCLUSIVE blocks;
 * reads (pg_dump, the fingerprint, new sessions) take ACCESS SHARE and pass. pg_largeobject
 * itself cannot be locked: lo_open takes ROW EXCLUSIVE on it even to read, so pg_dump would wait
 * for the fence (a write into an existing large object is not fenced).
 */
const catalogsWritesNeed = ['pg_catalog.pg_class', 'pg_catalog.pg_largeobject_metadata'];

/**
 * Throws when the two servers are one cluster (equal system_identifier): the new slot would
 * then run on the live data files. Asked before any other statement reaches the new server.
 */
export async function verifyOwnCluster($: Shell, live: RestoreTarget, next: RestoreTarget): Promise<void> {
  const query = 'SELECT system_identifier FROM pg_control_system();';
  const [a, b] = await Promise.all([adminSql($, live, query), adminSql($, next, query)]);
  if (a === b) {
    throw new CliError(
      `the new database server '${next.container}' is the live cluster (both have system_identifier ${a}): the slot shares the live data dir`,
      {
        advice: `Nothing was run against it. Give the database service storage of its own in the compose file (see deploy-to-qnap --dry-run).`,
      },
    );
  }
}

/**
 * The two psql sessions a fence works through, opened before it is raised (while the writers
 * stop): one on the live database that takes the locks, one on the maintenance database for
 * ALLOW_CONNECTIONS (refused on the current database) and ending the other sessions. Under the
 * freeze each `docker exec psql` would be a round trip of downtime; a statement in an open
 * session costs milliseconds.
 */
export class FenceSessions {
  private constructor(
    readonly lock: PsqlSession,
    readonly admin: AdminSession,
  ) {}

  /** Starts both sessions connecting; nothing is asked of the server yet. */
  static open(target: RestoreTarget): FenceSessions {
    return new FenceSessions(PsqlSession.open(target), new AdminSession(target));
  }

  /** Ends both at once (on failure paths and when the fence is released). */
  async close(): Promise<void> {
    this.lock.kill();
    await this.admin.close().catch(() => {});
  }
}

/**
 * The fence of the live database: no new sessions while the other clients' sessions are ended,
 * then every table, and the catalogs a new table or a large object is written to, locked against
 * writes (EXCLUSIVE: reads, pg_dump and the fingerprint pass) by
 * a session of this tool, and connections allowed again. The locks live in that session, so a
 * server shutdown ends the fence with it (nothing is left set on the old slot), and a client
 * blocked by it never commits; release() ends it on the abort paths.
 */
export class LiveFence {
  private constructor(
    private readonly $: Shell,
    private readonly target: RestoreTarget,
    private readonly sessions: FenceSessions,
    /** The lock session's server process: never ended by the fence's own sweeps. */
    private readonly pid: number,
    /** The tables it locks: under the fence no table can be created (pg_class is locked). */
    private readonly tables: string[],
    /** The server processes of the client sessions it ended: ending one is asynchronous (see staged-proof.ts). */
    readonly endedPids: number[],
  ) {}

  /**
   * Raises the fence; on failure nothing of it stays and the error lists the sessions in the way.
   * `sessions` may have been opened earlier (FenceSessions.open) so that they connect meanwhile.
   */
  static async raise(
    $: Shell,
    target: RestoreTarget,
    log: Logger,
    lockTimeout = '30s',
    sessions = FenceSessions.open(target),
  ): Promise<LiveFence> {
    const { lock: session, admin } = sessions;
    const db = quoteIdent(target.database);
    try {
      const pid = Number((await session.query('SELECT pg_backend_pid();'))[0]![0]!);
      // Selected first, ended after: in one WHERE, the planner may call pg_terminate_backend
      // before the other conditions, on every session of the server (this one too). One call
      // with the ALTER before it (ON_ERROR_STOP).
      const ended = (
        await admin.sql(
          `SET lock_timeout = ${literal(lockTimeout)};
           ALTER DATABASE ${db} WITH ALLOW_CONNECTIONS false;
           WITH others AS MATERIALIZED (SELECT pid, usename, application_name, client_addr FROM pg_stat_activity WHERE datname = ${literal(target.database)} AND pid NOT IN (${pid}, pg_backend_pid()) AND backend_type = 'client backend')
           SELECT pid, format('pid %s (%s, %s, %s)', pid, usename, coalesce(nullif(application_name, ''), 'no application name'), coalesce(client_addr::text, 'local')), pg_terminate_backend(pid) FROM others;`,
        )
      )
        .split('\n')
        .map((line) => /^(\d+)\|(.*)\|[tf]$/s.exec(line))
        .filter((match) => match !== null)
        .map(([, pid, text]) => ({ pid: Number(pid), text: text! }));
      if (ended.length)
        log.warn(
          `Fence: ended ${ended.length} other session(s) of '${target.database}': ${ended.map((e) => e.text).join('; ')}`,
        );
      const tables = (
        await session.query(
          `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema');`,
        )
      ).map((row) => row[0]!);
      await session.query(
        `SET lock_timeout = ${literal(lockTimeout)}; BEGIN; LOCK TABLE ${[...tables, ...catalogsWritesNeed].join(', ')} IN EXCLUSIVE MODE;`,
      );
      await admin.sql(`ALTER DATABASE ${db} WITH ALLOW_CONNECTIONS true;`);
      log.info(
        `Fence: '${target.database}' in '${target.container}' takes no writes (${tables.length} tables locked, and no new table or large object); reads and the backup pass`,
      );
      return new LiveFence(
        $,
        target,
        sessions,
        pid,
        tables,
        ended.map((e) => e.pid),
      );
    } catch (error) {
      await sessions.close();
      // A docker exec of its own: the admin session may be what failed.
      await adminSql($, target, `ALTER DATABASE ${db} WITH ALLOW_CONNECTIONS true;`).catch(() => {});
      const blockers = await adminSql(
        $,
        target,
        `SELECT string_agg(format('pid %s (%s, %s: %s)', pid, usename, application_name, left(query, 60)), '; ') FROM pg_stat_activity WHERE datname = ${literal(target.database)} AND backend_type = 'client backend';`,
      ).catch(() => '');
      throw new CliError(
        `could not fence the live database '${target.database}': ${errorText(error)}${blockers ? `; sessions: ${blockers}` : ''}`,
        {
          advice: 'End those sessions (or stop what opens them) and deploy again.',
        },
      );
    }
  }

  /** SQL on the live server's maintenance database, in the fence's open session (cluster-wide facts: WAL positions, senders, slots). */
  readonly adminSql: Sql = (sql) => this.sessions.admin.sql(sql);

  /**
   * Runs statements on the fenced tables (an ALTER TABLE the locks would block in any other
   * session) and commits them with the fence up: new sessions are refused and the other ones
   * ended before the commit, and the same session locks the tables and the catalogs again right
   * after it, before connections are allowed.
   */
  async commitWithin(sql: string): Promise<void> {
    const db = quoteIdent(this.target.database);
    const { lock, admin } = this.sessions;
    try {
      await admin.sql(
        `ALTER DATABASE ${db} WITH ALLOW_CONNECTIONS false;
         WITH others AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE datname = ${literal(this.target.database)} AND pid NOT IN (${this.pid}, pg_backend_pid()) AND backend_type = 'client backend') SELECT pg_terminate_backend(pid) FROM others;`,
      );
      await lock.query(
        `${sql}\nCOMMIT; BEGIN; LOCK TABLE ${[...this.tables, ...catalogsWritesNeed].join(', ')} IN EXCLUSIVE MODE;`,
      );
    } finally {
      // After a failed statement the admin session reopens for this one (AdminSession).
      await admin.sql(`ALTER DATABASE ${db} WITH ALLOW_CONNECTIONS true;`);
    }
  }

  /** Ends the fence: the locks go with the session; connections are allowed (idempotent). */
  async release(): Promise<void> {
    await this.sessions.close();
    // A docker exec of its own: the sessions are gone when the server was restarted meanwhile.
    await adminSql(
      this.$,
      this.target,
      `ALTER DATABASE ${quoteIdent(this.target.database)} WITH ALLOW_CONNECTIONS true;`,
    );
  }
}
