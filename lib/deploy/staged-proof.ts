// The proof of an online fill in two stages, so that the freeze does not read the whole data:
// while the game runs, every table is fingerprinted on the live database and, once the
// subscription has replayed past that point, on the new one (the pre-proof); under the freeze,
// only the tables written to since, on either side, are fingerprinted again, and the others keep
// their pre-proof digests. The freeze then reads what the game writes during a deployment, not
// the database.
//
// "Written to since" is PostgreSQL's own bookkeeping of each table: its storage file (a TRUNCATE
// or a rewrite gives it a new one), its columns (an ALTER TABLE that rewrites nothing, such as
// ADD COLUMN with a default or a wider varchar), and the cumulative counts of inserted, updated
// and deleted rows (rolled-back ones too). A server process adds its counts to those at the
// latest when it exits, so they are complete only once every process that could have written is
// gone: the fence ends the client sessions and the proof waits for them to exit, and the
// subscription is disabled (its worker exits) before the new side is read. What would keep the
// counts from being complete (track_counts off, a background worker in the database) makes the
// whole proof run under the freeze, as a one-stage proof would. So does any change, on either
// side, to what a row's text form depends on outside its table (an enum value renamed, a type,
// relation, function or role renamed: regclass and the like), to the counts' baseline (a reset,
// a restart), or a worker still running 30 s after the subscription is disabled.
import type { PsqlSession } from '../host/psql-session.ts';
import { hex, type TableFingerprint, userTablesFrom } from '../dump/fingerprint.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A table's identity in the maps below (schema and name may hold any character). */
export const tableKey = (t: { schema: string; table: string }) => JSON.stringify([t.schema, t.table]);

/**
 * Per table: its storage file, its row counts and its columns, as one comparable string; and,
 * under catalogKey, what every row's text form depends on outside its table (see catalogMark).
 */
export type TableMarks = Map<string, string>;

/** The key of the catalog's mark: no schema has an empty name, so no table has this key. */
export const catalogKey = tableKey({ schema: '', table: 'catalog' });

/**
 * What can change a row's text form, or the counts' meaning, without a write to its table: the
 * names of types, enum labels (ALTER TYPE ... RENAME VALUE), composite types' attributes,
 * relations, schemas, functions and roles (regclass, regproc, regrole columns), and a reset of
 * the statistics or a restart of the server. Temporary schemas are left out (a game's temporary
 * tables come and go). When it moves, no pre-proof digest is kept.
 */
const catalogMark = `md5(concat_ws('|',
    (SELECT string_agg(concat_ws(',', t.oid, t.typname, t.typnamespace, t.typtype, t.typbasetype, t.typelem, t.typrelid,
        t.typtypmod, t.typcollation), ';' ORDER BY t.oid) FROM pg_type t WHERE t.typnamespace NOT IN (SELECT oid FROM temporary)),
    (SELECT string_agg(concat_ws(',', e.enumtypid, e.enumsortorder, e.enumlabel), ';' ORDER BY e.enumtypid, e.enumsortorder) FROM pg_enum e),
    (SELECT string_agg(concat_ws(',', a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attisdropped), ';' ORDER BY a.attrelid, a.attnum)
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relkind = 'c' AND a.attnum > 0),
    (SELECT string_agg(concat_ws(',', c.oid, c.relname, c.relnamespace), ';' ORDER BY c.oid) FROM pg_class c WHERE c.relnamespace NOT IN (SELECT oid FROM temporary)),
    (SELECT string_agg(concat_ws(',', n.oid, n.nspname), ';' ORDER BY n.oid) FROM pg_namespace n WHERE n.oid NOT IN (SELECT oid FROM temporary)),
    (SELECT string_agg(concat_ws(',', p.oid, p.proname, p.pronamespace), ';' ORDER BY p.oid) FROM pg_proc p),
    (SELECT string_agg(concat_ws(',', r.oid, r.rolname), ';' ORDER BY r.oid) FROM pg_roles r),
    pg_stat_get_db_stat_reset_time((SELECT oid FROM pg_database WHERE datname = current_database())),
    pg_postmaster_start_time()))`;
const temporarySchemas = `temporary AS (SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg\\_temp\\_%' OR nspname LIKE 'pg\\_toast\\_temp\\_%')`;

/** One database's stage of the pre-proof: its marks, read before its fingerprint was taken. */
export interface ProofSide {
  marks: TableMarks;
  tables: Map<string, TableFingerprint>;
}

export interface PreProof {
  live: ProofSide;
  next: ProofSide;
}

/** The marks of a database, or why its counts cannot be trusted to show every write. */
export type MarksReading = { marks: TableMarks } | { untrusted: string };

/** Backend types that may be connected to the database without writing to its tables unseen. */
const harmlessBackends = ['client backend', 'walsender', 'autovacuum worker', 'parallel worker'];

/**
 * Reads the marks of every table the fingerprint covers, once the given server processes (the
 * sessions the fence ended) have exited. `expected`: the backend types allowed besides the
 * harmless ones (the subscription's worker, while the pre-proof reads the new database: what it
 * applies later moves the marks by the freeze, when it has exited). The session must not have
 * read statistics in an open transaction (they would be the cached ones).
 */
export async function readMarks(
  session: PsqlSession,
  options: { pids?: number[]; expected?: string[]; waitMs?: number } = {},
): Promise<MarksReading> {
  const { pids = [], expected = [], waitMs = 30_000 } = options;
  const [[trackCounts, overridden, workers]] = (await session.query(`
    SET stats_fetch_consistency = none;
    SELECT current_setting('track_counts'),
      (SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') ILIKE '%track_counts%'),
      (SELECT coalesce(string_agg(DISTINCT backend_type, ', '), '') FROM pg_stat_activity
        WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND backend_type <> ALL (ARRAY[${[...harmlessBackends, ...expected].map((b) => `'${b}'`).join(', ')}]))`)) as [
    [string, string, string],
  ];
  if (trackCounts !== 'on') return { untrusted: 'track_counts is off on the server' };
  if (Number(overridden) > 0) return { untrusted: 'a database or role sets track_counts' };
  if (workers) return { untrusted: `a ${workers} is connected to the database` };
  const deadline = Date.now() + waitMs;
  const list = pids.map(Number).join(', ');
  while (pids.length) {
    const [[left]] = (await session.query(`SELECT count(*) FROM pg_stat_activity WHERE pid IN (${list});`)) as [
      [string],
    ];
    if (left === '0') break;
    if (Date.now() > deadline) return { untrusted: `${left} ended session(s) had not exited after ${waitMs / 1000} s` };
    await sleep(50);
  }
  const rows = await session.query(`
    SELECT encode(convert_to(n.nspname, 'UTF8'), 'hex'), encode(convert_to(c.relname, 'UTF8'), 'hex'),
      concat_ws(' ', c.relfilenode, pg_stat_get_tuples_inserted(c.oid), pg_stat_get_tuples_updated(c.oid),
        pg_stat_get_tuples_deleted(c.oid),
        md5((SELECT string_agg(concat_ws(',', a.attnum, a.attname, a.atttypid, a.atttypmod, a.attisdropped,
            a.atthasmissing, a.attmissingval::text, a.attcollation, a.attgenerated, a.attnotnull), ';' ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0)))
    ${userTablesFrom}`);
  const [[catalog]] = (await session.query(`WITH ${temporarySchemas} SELECT ${catalogMark};`)) as [[string]];
  return {
    marks: new Map([
      ...rows.map(([schema, table, mark]): [string, string] => [
        tableKey({ schema: hex(schema!), table: hex(table!) }),
        mark!,
      ]),
      [catalogKey, catalog],
    ]),
  };
}

/**
 * The tables whose pre-proof digests still hold under the freeze: equal on both databases at the
 * pre-proof, and neither database's table written to, rewritten or altered since.
 */
export function unchangedTables(pre: PreProof, liveNow: TableMarks, nextNow: TableMarks): Set<string> {
  const unchanged = new Set<string>();
  const catalogs = [pre.live.marks, liveNow, pre.next.marks, nextNow].map((m) => m.get(catalogKey));
  if (catalogs.some((c) => c === undefined) || catalogs[0] !== catalogs[1] || catalogs[2] !== catalogs[3])
    return unchanged;
  for (const [key, live] of pre.live.tables) {
    const next = pre.next.tables.get(key);
    const marks = [pre.live.marks.get(key), liveNow.get(key), pre.next.marks.get(key), nextNow.get(key)];
    if (
      next &&
      live.rows === next.rows &&
      live.digest === next.digest &&
      marks.every((m) => m !== undefined) &&
      marks[0] === marks[1] &&
      marks[2] === marks[3]
    )
      unchanged.add(key);
  }
  return unchanged;
}
