// The fingerprint against a real PostgreSQL container: which tables get the typed hash, and that
// every kind of change is seen, including the ones a type's own hash function would miss
// (numeric scale, jsonb number spelling, interval units), which must go by the text form.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { listTables, takeFingerprint, type FingerprintAlgorithm } from '../lib/dump/fingerprint.ts';
import { openSession, psql, removeDb, scratchName, startDb } from './helpers/db.ts';

const name = scratchName('pb-fingerprint');
let ready = false;

const schema = `
CREATE DOMAIN score AS integer;
CREATE TABLE simple (id int, name text, code varchar(10), flag bool, born timestamptz, day date, at time, ts timestamp,
  u uuid, b bytea, c char(3), s score, big bigint, small smallint, "ROW" text);
CREATE TABLE amounts (id int, amount numeric);
CREATE TABLE docs (id int, doc jsonb);
CREATE TABLE spans (id int, span interval);
CREATE TABLE tags (id int, tags text[]);
CREATE TABLE no_columns ();
INSERT INTO simple SELECT g, 'name ' || g, 'c' || g, g % 2 = 0, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
  '2024-01-01'::date + g, '12:00'::time, '2024-01-01'::timestamp, md5(g::text)::uuid, '\\x00ff', 'ab', g, g * 1000000000::bigint, g, NULL
  FROM generate_series(1, 50) g;
INSERT INTO amounts VALUES (1, 1.0), (2, 2.50);
INSERT INTO docs VALUES (1, '{"a": 1.0}');
INSERT INTO spans VALUES (1, '1 day');
INSERT INTO tags VALUES (1, ARRAY['x', 'y']);
INSERT INTO no_columns DEFAULT VALUES;
`;

async function fingerprint(database: string, algorithm?: FingerprintAlgorithm) {
  const session = openSession(name, database);
  try {
    return await takeFingerprint(session, [], algorithm);
  } finally {
    await session.close();
  }
}

/** A fresh copy of the test database, changed by `sql`; returns which tables' digests differ from the original. */
async function changedTables(sql: string, algorithm: FingerprintAlgorithm): Promise<string[]> {
  await psql(name, 'DROP DATABASE IF EXISTS copy; CREATE DATABASE copy TEMPLATE planetarion', { db: 'postgres' });
  await psql(name, sql, { db: 'copy' });
  const [original, copy] = [await fingerprint('planetarion', algorithm), await fingerprint('copy', algorithm)];
  return copy.tables
    .filter((t, i) => t.digest !== original.tables[i]!.digest || t.rows !== original.tables[i]!.rows)
    .map((t) => t.table);
}

const fp = suite('fingerprint');

fp('setup: a database with a table of each kind', async () => {
  await startDb(name, { timeoutMs: 300_000 }); // generous: the test machine may be busy
  await psql(name, schema);
  ready = true;
});

fp('the typed hash applies to tables of plain types (domains included), the text form to the rest', async () => {
  assert.ok(ready, 'setup failed');
  const session = openSession(name);
  try {
    const kinds = Object.fromEntries((await listTables(session)).map((t) => [t.table, t.typed]));
    assert.equal(kinds, { amounts: false, docs: false, no_columns: true, simple: true, spans: false, tags: false });
  } finally {
    await session.close();
  }
});

fp('both algorithms agree on equal data and name their algorithm; their sums differ', async () => {
  assert.ok(ready, 'setup failed');
  await psql(name, 'DROP DATABASE IF EXISTS copy; CREATE DATABASE copy TEMPLATE planetarion', { db: 'postgres' });
  const [typed, text] = [await fingerprint('planetarion', 'typed'), await fingerprint('planetarion', 'text')];
  assert.is(typed.algorithm, 'typed');
  assert.is((await fingerprint('planetarion')).algorithm, 'typed-only');
  assert.is(text.algorithm, 'text');
  assert.is((await fingerprint('copy', 'typed')).sha256, typed.sha256);
  assert.is((await fingerprint('copy', 'text')).sha256, text.sha256);
  assert.is.not(typed.sha256, text.sha256);
  assert.is.not(
    typed.tables.find((t) => t.table === 'simple')!.digest,
    text.tables.find((t) => t.table === 'simple')!.digest,
  );
  assert.is(
    typed.tables.find((t) => t.table === 'amounts')!.digest,
    text.tables.find((t) => t.table === 'amounts')!.digest,
  );
});

fp('typed-only counts an inheritance child once, in itself; typed counted it in its parent too', async () => {
  assert.ok(ready, 'setup failed');
  await psql(name, 'DROP DATABASE IF EXISTS inherit; CREATE DATABASE inherit', { db: 'postgres' });
  await psql(
    name,
    "CREATE TABLE parent (id int); CREATE TABLE child (extra text) INHERITS (parent); INSERT INTO parent VALUES (1), (2), (3); INSERT INTO child VALUES (4, 'x'), (5, 'y');",
    { db: 'inherit' },
  );
  const rows = (f: { tables: Array<{ table: string; rows: number }> }) =>
    Object.fromEntries(f.tables.map((t) => [t.table, t.rows]));
  assert.equal(rows(await fingerprint('inherit')), { child: 2, parent: 3 });
  assert.equal(rows(await fingerprint('inherit', 'typed')), { child: 2, parent: 5 });
});

fp('a failing tryQuery names the error and leaves the transaction, and the snapshot it exported, usable', async () => {
  assert.ok(ready, 'setup failed');
  const session = openSession(name);
  try {
    const [[snapshot]] = (await session.query(
      'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()',
    )) as [[string]];
    assert.equal(await session.tryQuery('SELECT 1 / 0'), { error: 'division by zero' });
    assert.equal(await session.tryQuery("SELECT 'still', 'here'"), { rows: [['still', 'here']] });
    // Still in the transaction (a failed statement without the savepoint would have aborted it),
    // with ON_ERROR_STOP back on: a plain query's failure ends the session as before.
    assert.equal(await session.query('SELECT count(*) FROM simple'), [['50']]);
    const imported = await psql(
      name,
      `BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '${snapshot}'; SELECT count(*) FROM simple; COMMIT;`,
    );
    assert.match(imported, /^50$/m);
    // The error of a later failure is that failure's, without the one tryQuery answered with.
    await session.query('SELECT * FROM no_such_table').then(
      () => assert.unreachable('the failed query resolved'),
      (error: Error) => {
        assert.match(error.message, /relation "no_such_table" does not exist/);
        assert.not.match(error.message, /division by zero/);
      },
    );
  } finally {
    session.kill();
  }
});

/**
 * The test's own sessions under the 1 ms role settings: startup options beat the role's, whereas a
 * 1 ms timer can cancel a first `SET statement_timeout = 0` itself on a loaded machine.
 */
const noTimeouts =
  "dbname=planetarion options='-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0'";

fp(
  'the session resets role-level timeouts and search_path: a 1 ms statement_timeout and a shadowing function change nothing',
  async () => {
    assert.ok(ready, 'setup failed');
    const before = await fingerprint('planetarion', 'text');
    await psql(
      name,
      `CREATE FUNCTION public.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
    ALTER ROLE planetarion_user SET search_path = public, pg_catalog;
    ALTER ROLE planetarion_user SET statement_timeout = '1ms'; ALTER ROLE planetarion_user SET lock_timeout = '1ms';
    ALTER ROLE planetarion_user SET idle_in_transaction_session_timeout = '1ms';`,
    );
    try {
      // The big sum of a table of 200 000 rows takes far longer than 1 ms.
      await psql(name, 'CREATE TABLE slow AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g;', {
        db: noTimeouts,
      });
      const after = await fingerprint('planetarion', 'text');
      assert.equal(
        after.tables.filter((t) => t.table !== 'slow'),
        before.tables,
      );
      assert.ok(after.tables.find((t) => t.table === 'slow')!.rows === 200000);
    } finally {
      await psql(
        name,
        'ALTER ROLE planetarion_user RESET ALL; DROP FUNCTION public.hashtextextended(text, bigint); DROP TABLE IF EXISTS slow;',
        { db: noTimeouts },
      );
    }
  },
);

for (const algorithm of ['typed-only', 'typed', 'text'] as const) {
  fp(
    `${algorithm}: a change in any column, a moved value, a lost or an extra row is seen in that table only`,
    async () => {
      assert.ok(ready, 'setup failed');
      for (const change of [
        "UPDATE simple SET name = 'name 1 ' WHERE id = 1",
        "UPDATE simple SET born = born + interval '1 microsecond' WHERE id = 2",
        "UPDATE simple SET u = md5('x')::uuid WHERE id = 3",
        "UPDATE simple SET b = '\\x00fe' WHERE id = 4",
        'UPDATE simple SET s = NULL WHERE id = 5',
        'UPDATE simple SET "ROW" = \'\' WHERE id = 6',
        'UPDATE simple SET name = code, code = name WHERE id = 7',
        'DELETE FROM simple WHERE id = 8',
        'INSERT INTO simple (id) VALUES (8)',
      ]) {
        assert.equal(await changedTables(change, algorithm), ['simple'], change);
      }
    },
  );

  fp(
    `${algorithm}: changes only the text form shows (numeric scale, jsonb spelling, interval units, array order) are seen`,
    async () => {
      assert.ok(ready, 'setup failed');
      assert.equal(await changedTables('UPDATE amounts SET amount = 1.00 WHERE id = 1', algorithm), ['amounts']);
      assert.equal(await changedTables(`UPDATE docs SET doc = '{"a": 1.00}'`, algorithm), ['docs']);
      assert.equal(await changedTables("UPDATE spans SET span = '24 hours'", algorithm), ['spans']);
      assert.equal(await changedTables("UPDATE tags SET tags = ARRAY['y', 'x']", algorithm), ['tags']);
      assert.equal(await changedTables('INSERT INTO no_columns DEFAULT VALUES', algorithm), ['no_columns']);
    },
  );
}

fp.after(async () => {
  await removeDb(name);
});

fp.run();
