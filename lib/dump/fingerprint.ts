// The "game state hash" of the old scripts' restore validation: per table a row count and an
// order-independent digest of every row, plus every sequence's value, combined into one sha256.
// The backup takes it in the dump's own snapshot; a restore recomputes it with the algorithm
// the manifest names and compares.
import { createHash } from 'node:crypto';
import type { PsqlSession } from '../host/psql-session.ts';

/**
 * How a row is hashed. `text`: hashtextextended(row::text) for every table (the first
 * manifests). `typed`: hash_record_extended(row), the types' own hash functions with no text
 * conversion (1.6x faster on a scale-30 pgbench table), for tables whose every column has a
 * type where equal hashes input means equal text output; the others keep the text form.
 * `typed-only`: typed, and each table counts its own rows only (FROM ONLY): an inheritance
 * child is a table of its own and was counted twice before, in itself and in its parent.
 */
export type FingerprintAlgorithm = 'text' | 'typed' | 'typed-only';
export const currentAlgorithm: FingerprintAlgorithm = 'typed-only';

/**
 * Types whose hash function sees exactly what their text form shows. Left out on purpose:
 * numeric (1.0 and 1.00 hash alike), floats (0 and -0), interval ('1 day' = '24 hours'),
 * json/jsonb, arrays, composites, enums, ranges and extension types: those tables are hashed
 * by their text form. Domains count as their base type.
 */
const typedHashTypes = [
  'bool',
  'bytea',
  '"char"',
  'name',
  'int2',
  'int4',
  'int8',
  'oid',
  'text',
  'varchar',
  'bpchar',
  'date',
  'time',
  'timestamp',
  'timestamptz',
  'uuid',
];

export interface TableFingerprint {
  schema: string;
  table: string;
  rows: number;
  /** The sum of every row's 64-bit hash over the table: exact (numeric), independent of row order. */
  digest: string;
}

export interface SequenceState {
  /** Schema-qualified and quoted as pg_dump writes it in setval(). */
  name: string;
  value: string;
  isCalled: boolean;
}

export interface Fingerprint {
  sha256: string;
  /** Absent in manifests written before the typed hash: those are `text`. */
  algorithm?: FingerprintAlgorithm;
  tables: TableFingerprint[];
  sequences: SequenceState[];
  /** Tables left out by PLANETARION_FINGERPRINT_EXCLUDE, as schema.table. */
  excluded: string[];
}

/**
 * Session settings: first no timeouts (a role- or database-level statement_timeout,
 * lock_timeout or idle_in_transaction_session_timeout would end the fingerprint's long reads,
 * or the snapshot's transaction idling while pg_dump streams), and only pg_catalog on the
 * search_path (a user's function or operator of the same name cannot shadow a built-in).
 * Then what makes every row's text form the same on any server: the output of timestamptz,
 * floats and bytea depends on it.
 */
export const fingerprintSessionSettings =
  'SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET search_path = pg_catalog; ' +
  "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex';";

export const hex = (text: string) => Buffer.from(text, 'hex').toString('utf8');

/** A pattern list like `public.sessions,audit_*` (a bare name matches in any schema). */
export function parseExclusions(raw: string | undefined): RegExp[] {
  return (raw ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((pattern) => {
      const qualified = pattern.includes('.') ? pattern : `*.${pattern}`;
      const body = qualified
        .split('*')
        .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*');
      return new RegExp(`^${body}$`);
    });
}

/** Quotes an identifier for SQL text (doubling embedded quotes). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The tables a fingerprint covers, as `c` (pg_class) and `n` (its schema): user tables, not extension-owned. */
/** SQL condition on the relation `c`: no extension owns it (its contents are the extension's). */
export const notExtensionOwned =
  "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";

export const userTablesFrom = `FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND ${notExtensionOwned}`;

/**
 * User tables of every non-system schema (not extension-owned), sorted by schema and name, each
 * with whether the typed hash applies to it (every column of a typedHashTypes type, compared
 * by a deterministic collation).
 */
export async function listTables(
  session: PsqlSession,
): Promise<Array<{ schema: string; table: string; typed: boolean }>> {
  // Names come back hex-encoded: a table name may hold newlines or the field separator.
  const types = typedHashTypes.map((t) => `'${t.replace(/'/g, "''")}'`).join(', ');
  const rows = await session.query(`
    SELECT encode(convert_to(n.nspname, 'UTF8'), 'hex'), encode(convert_to(c.relname, 'UTF8'), 'hex'),
      coalesce((SELECT bool_and(
          (CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END) = ANY (ARRAY[${types}]::regtype[])
          AND (a.attcollation = 0 OR EXISTS (SELECT 1 FROM pg_collation co WHERE co.oid = a.attcollation AND co.collisdeterministic)))
        FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), true)
    ${userTablesFrom}
    ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`);
  return rows.map(([schema, table, typed]) => ({ schema: hex(schema!), table: hex(table!), typed: typed === 't' }));
}

/**
 * Counts and digests every table (minus exclusions) in one statement, in the session's snapshot;
 * with `select`, just the tables it accepts (the excluded ones are still all listed).
 */
export async function fingerprintTables(
  session: PsqlSession,
  exclusions: RegExp[] = [],
  algorithm: FingerprintAlgorithm = currentAlgorithm,
  options: {
    select?: (table: { schema: string; table: string }) => boolean;
    /** One statement per table (each its own snapshot), instead of one for all. */
    perTable?: boolean;
  } = {},
): Promise<{ tables: TableFingerprint[]; excluded: string[] }> {
  const { select = () => true, perTable = false } = options;
  const all = await listTables(session);
  const excluded: string[] = [];
  const included = all.filter(({ schema, table }) => {
    const skip = exclusions.some((re) => re.test(`${schema}.${table}`));
    if (skip) excluded.push(`${schema}.${table}`);
    return !skip;
  });
  const wanted = included.filter(select);
  if (wanted.length === 0) return { tables: [], excluded };
  // `alias.*` is the whole row even if a column has the alias's name.
  const rowHash = (typed: boolean) =>
    algorithm !== 'text' && typed
      ? 'hash_record_extended(ROW("planetarion row".*), 0)'
      : 'hashtextextended(("planetarion row".*)::text, 0)';
  const only = algorithm === 'typed-only' ? 'ONLY ' : '';
  const statements = wanted.map(
    ({ schema, table, typed }, i) =>
      `SELECT ${i}, count(*), coalesce(sum(${rowHash(typed)}), 0) FROM ${only}${quoteIdent(schema)}.${quoteIdent(table)} AS "planetarion row"`,
  );
  const rows: string[][] = [];
  if (perTable) for (const sql of statements) rows.push(...(await session.query(sql)));
  else rows.push(...(await session.query(statements.join('\nUNION ALL\n'))));
  const tables = rows.map(([i, count, digest]) => {
    const { schema, table } = wanted[Number(i)]!;
    return { schema, table, rows: Number(count), digest: digest! };
  });
  return { tables: tables.sort(byName), excluded };
}

function byName(a: { schema: string; table: string }, b: { schema: string; table: string }): number {
  return a.schema === b.schema ? (a.table < b.table ? -1 : a.table > b.table ? 1 : 0) : a.schema < b.schema ? -1 : 1;
}

/** Every sequence's last_value and is_called, named as pg_dump's setval() names it. */
export async function readSequences(session: PsqlSession): Promise<SequenceState[]> {
  const names = await session.query(`
    SELECT encode(convert_to(format('%I.%I', n.nspname, c.relname), 'UTF8'), 'hex')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 1`);
  if (names.length === 0) return [];
  const qualified = names.map(([h]) => hex(h!));
  const rows = await session.query(
    qualified.map((name, i) => `SELECT ${i}, last_value, is_called FROM ${name}`).join('\nUNION ALL\n'),
  );
  return rows
    .map(([i, value, called]) => ({ name: qualified[Number(i)]!, value: value!, isCalled: called === 't' }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Combines the parts into a Fingerprint with its sha256 over a canonical form. */
export function combineFingerprint(
  tables: TableFingerprint[],
  sequences: SequenceState[],
  excluded: string[] = [],
  algorithm: FingerprintAlgorithm = currentAlgorithm,
): Fingerprint {
  const sortedTables = [...tables].sort(byName);
  const sortedSequences = [...sequences].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const canonical = JSON.stringify({
    // The text algorithm's canonical form predates the field: its sums stay reproducible.
    ...(algorithm === 'text' ? {} : { algorithm }),
    tables: sortedTables.map((t) => [t.schema, t.table, t.rows, t.digest]),
    sequences: sortedSequences.map((s) => [s.name, s.value, s.isCalled]),
  });
  return {
    sha256: createHash('sha256').update(canonical).digest('hex'),
    algorithm,
    tables: sortedTables,
    sequences: sortedSequences,
    excluded,
  };
}

/** Takes the whole fingerprint of the database a session is connected to (used on restored databases). */
export async function takeFingerprint(
  session: PsqlSession,
  exclusions: RegExp[] = [],
  algorithm: FingerprintAlgorithm = currentAlgorithm,
): Promise<Fingerprint> {
  await session.query(fingerprintSessionSettings);
  const { tables, excluded } = await fingerprintTables(session, exclusions, algorithm);
  const sequences = await readSequences(session);
  return combineFingerprint(tables, sequences, excluded, algorithm);
}

export interface FingerprintDifference {
  kind: 'table' | 'sequence';
  name: string;
  expected: { rows: number; digest: string } | { value: string; isCalled: boolean } | null;
  actual: { rows: number; digest: string } | { value: string; isCalled: boolean } | null;
}

/** Each table and sequence that differs between two fingerprints, with expected and actual values. */
export function compareFingerprints(expected: Fingerprint, actual: Fingerprint): FingerprintDifference[] {
  const differences: FingerprintDifference[] = [];
  const tableKey = (t: TableFingerprint) => `${t.schema}.${t.table}`;
  const exp = new Map(expected.tables.map((t) => [tableKey(t), t]));
  const act = new Map(actual.tables.map((t) => [tableKey(t), t]));
  for (const name of [...new Set([...exp.keys(), ...act.keys()])].sort()) {
    const e = exp.get(name);
    const a = act.get(name);
    if (!e || !a || e.rows !== a.rows || e.digest !== a.digest) {
      differences.push({
        kind: 'table',
        name,
        expected: e ? { rows: e.rows, digest: e.digest } : null,
        actual: a ? { rows: a.rows, digest: a.digest } : null,
      });
    }
  }
  const es = new Map(expected.sequences.map((s) => [s.name, s]));
  const as = new Map(actual.sequences.map((s) => [s.name, s]));
  for (const name of [...new Set([...es.keys(), ...as.keys()])].sort()) {
    const e = es.get(name);
    const a = as.get(name);
    if (!e || !a || e.value !== a.value || e.isCalled !== a.isCalled) {
      differences.push({
        kind: 'sequence',
        name,
        expected: e ? { value: e.value, isCalled: e.isCalled } : null,
        actual: a ? { value: a.value, isCalled: a.isCalled } : null,
      });
    }
  }
  return differences;
}
