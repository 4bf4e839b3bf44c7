// The "game state hash" of the seed's restore validation: per table a row count and an
// order-independent digest of every row's text form, plus every sequence's value, combined
// into one sha256. The backup takes it in the dump's own snapshot; a restore recomputes it
// with the same functions and compares.
import { createHash } from 'node:crypto';
import type { PsqlSession } from './psql-session.ts';

export interface TableFingerprint {
  schema: string;
  table: string;
  rows: number;
  /** sum(hashtextextended(row::text, 0)) over the table: exact (numeric), independent of row order. */
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
  tables: TableFingerprint[];
  sequences: SequenceState[];
  /** Tables left out by PLANETARION_FINGERPRINT_EXCLUDE, as schema.table. */
  excluded: string[];
}

/**
 * Session settings that make every row's text form the same on any server: the output of
 * timestamptz, floats and bytea depends on them.
 */
export const fingerprintSessionSettings =
  "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex';";

const hex = (text: string) => Buffer.from(text, 'hex').toString('utf8');

/** A pattern list like `public.sessions,audit_*` (a bare name matches in any schema). */
export function parseExclusions(raw: string | undefined): RegExp[] {
  return (raw ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((pattern) => {
      const qualified = pattern.includes('.') ? pattern : `*.${pattern}`;
      const body = qualified.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
      return new RegExp(`^${body}$`);
    });
}

/** Quotes an identifier for SQL text (doubling embedded quotes). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** User tables of every non-system schema (not extension-owned), sorted by schema and name. */
export async function listTables(session: PsqlSession): Promise<Array<{ schema: string; table: string }>> {
  // Names come back hex-encoded: a table name may hold newlines or the field separator.
  const rows = await session.query(`
    SELECT encode(convert_to(n.nspname, 'UTF8'), 'hex'), encode(convert_to(c.relname, 'UTF8'), 'hex')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`);
  return rows.map(([schema, table]) => ({ schema: hex(schema!), table: hex(table!) }));
}

/** Counts and digests every table (minus exclusions) in one statement, in the session's snapshot. */
export async function fingerprintTables(
  session: PsqlSession,
  exclusions: RegExp[] = [],
): Promise<{ tables: TableFingerprint[]; excluded: string[] }> {
  const all = await listTables(session);
  const excluded: string[] = [];
  const included = all.filter(({ schema, table }) => {
    const skip = exclusions.some((re) => re.test(`${schema}.${table}`));
    if (skip) excluded.push(`${schema}.${table}`);
    return !skip;
  });
  if (included.length === 0) return { tables: [], excluded };
  // The alias's whole-row reference is the row; `alias.*` keeps it so even if a column has the alias's name.
  const sql = included
    .map(
      ({ schema, table }, i) =>
        `SELECT ${i}, count(*), coalesce(sum(hashtextextended(("planetarion row".*)::text, 0)), 0) FROM ${quoteIdent(schema)}.${quoteIdent(table)} AS "planetarion row"`,
    )
    .join('\nUNION ALL\n');
  const rows = await session.query(sql);
  const tables = rows.map(([i, count, digest]) => ({ ...included[Number(i)]!, rows: Number(count), digest: digest! }));
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
  const rows = await session.query(qualified.map((name, i) => `SELECT ${i}, last_value, is_called FROM ${name}`).join('\nUNION ALL\n'));
  return rows
    .map(([i, value, called]) => ({ name: qualified[Number(i)]!, value: value!, isCalled: called === 't' }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Combines the parts into a Fingerprint with its sha256 over a canonical form. */
export function combineFingerprint(tables: TableFingerprint[], sequences: SequenceState[], excluded: string[] = []): Fingerprint {
  const sortedTables = [...tables].sort(byName);
  const sortedSequences = [...sequences].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const canonical = JSON.stringify({
    tables: sortedTables.map((t) => [t.schema, t.table, t.rows, t.digest]),
    sequences: sortedSequences.map((s) => [s.name, s.value, s.isCalled]),
  });
  return {
    sha256: createHash('sha256').update(canonical).digest('hex'),
    tables: sortedTables,
    sequences: sortedSequences,
    excluded,
  };
}

/** Takes the whole fingerprint of the database a session is connected to (used on restored databases). */
export async function takeFingerprint(session: PsqlSession, exclusions: RegExp[] = []): Promise<Fingerprint> {
  await session.query(fingerprintSessionSettings);
  const { tables, excluded } = await fingerprintTables(session, exclusions);
  const sequences = await readSequences(session);
  return combineFingerprint(tables, sequences, excluded);
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
