// The marks the staged proof trusts (staged-proof.ts), against a real PostgreSQL: every kind of
// write or schema change to a table moves its mark once the session that made it has ended
// (including the ones that leave the row counts alone: an ADD COLUMN with a default, a wider
// varchar), and reads, VACUUM, ANALYZE and writes to other tables leave it alone.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fingerprintSessionSettings } from '../lib/dump/fingerprint.ts';
import { catalogKey, type MarksReading, readMarks, tableKey } from '../lib/deploy/staged-proof.ts';
import { openSession, psql, removeDb, scratchName, startDb } from './helpers/db.ts';

const name = scratchName('pb-staged-proof');
let ready = false;

const schema = `
CREATE TABLE planets (id int PRIMARY KEY, name varchar(10) NOT NULL, ore bigint NOT NULL);
CREATE TABLE scores (player int, points int);
CREATE TABLE "odd ""name""" (x text);
CREATE TYPE mood AS ENUM ('calm', 'angry');
CREATE TABLE moods (who int, feels mood);
INSERT INTO moods VALUES (1, 'calm');
INSERT INTO planets SELECT g, 'p' || g, g FROM generate_series(1, 1000) g;
INSERT INTO scores SELECT g, 0 FROM generate_series(1, 50) g;
INSERT INTO "odd ""name""" VALUES ('INSERT INTO planets VALUES (1); --');`;

async function marksOf(pids: number[] = []): Promise<MarksReading> {
  const session = openSession(name);
  try {
    await session.query(fingerprintSessionSettings);
    return await readMarks(session, { pids });
  } finally {
    await session.close();
  }
}

async function trusted(pids: number[] = []): Promise<Map<string, string>> {
  const reading = await marksOf(pids);
  if ('untrusted' in reading) throw new Error(`marks untrusted: ${reading.untrusted}`);
  return reading.marks;
}

/** Runs SQL in a session of its own, which ends; returns the tables whose marks it moved. */
async function moved(sql: string): Promise<string[]> {
  const before = await trusted();
  const pid = Number((await psql(name, `SELECT pg_backend_pid();\n${sql}`)).split('\n')[0]);
  const after = await trusted([pid]);
  return [...after.keys()]
    .filter((k) => after.get(k) !== before.get(k))
    .map((k) => (k === catalogKey ? '(catalog)' : JSON.parse(k)[1]))
    .sort();
}

const marks = suite('staged proof: the marks of a table');

marks.before(async () => {
  await startDb(name, { timeoutMs: 300_000 });
  await psql(name, schema);
  ready = true;
});
marks.after(() => removeDb(name));

const cases: Array<[string, string, string[]]> = [
  ['an INSERT', "INSERT INTO planets VALUES (5000, 'new', 1);", ['planets']],
  ['an UPDATE of one row (a HOT update)', 'UPDATE planets SET ore = ore + 1 WHERE id = 7;', ['planets']],
  ['an UPDATE of a keyless table', 'UPDATE scores SET points = 3 WHERE player = 2;', ['scores']],
  ['a DELETE', 'DELETE FROM planets WHERE id = 9;', ['planets']],
  ['a TRUNCATE', 'TRUNCATE scores;', ['scores']],
  ['a COPY', 'COPY scores FROM STDIN;\n1\t1\n\\.\n', ['scores']],
  ['an INSERT rolled back', "BEGIN; INSERT INTO planets VALUES (6000, 'gone', 1); ROLLBACK;", ['planets']],
  [
    'ADD COLUMN with a default (no rewrite, no row written)',
    'ALTER TABLE planets ADD COLUMN moons int DEFAULT 3;',
    ['planets'],
  ],
  ['a wider varchar (no rewrite)', 'ALTER TABLE planets ALTER COLUMN name TYPE varchar(20);', ['planets']],
  ['DROP COLUMN', 'ALTER TABLE planets DROP COLUMN moons;', ['planets']],
  ['a write to a table with an odd name', `UPDATE "odd ""name""" SET x = 'y';`, ['odd "name"']],
  [
    'reads, VACUUM, ANALYZE and a CHECKPOINT',
    'SELECT count(*) FROM planets; VACUUM planets; ANALYZE scores; CHECKPOINT;',
    [],
  ],
  [
    'a temporary table created and dropped',
    'CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1); DROP TABLE scratch;',
    [],
  ],
  [
    "an enum value renamed (no table written: the rows' text changes)",
    "ALTER TYPE mood RENAME VALUE 'calm' TO 'serene';",
    ['(catalog)'],
  ],
  ['a statistics reset', 'SELECT pg_stat_reset();', ['(catalog)', 'moods', 'odd "name"', 'planets', 'scores']],
];

for (const [what, sql, expected] of cases)
  marks(`${what}: moves the marks of ${expected.join(', ') || 'no table'}`, async () => {
    assert.ok(ready, 'setup failed');
    assert.equal(await moved(sql), expected);
  });

marks('a write of a session still open counts once the session is ended and waited for', async () => {
  assert.ok(ready, 'setup failed');
  const before = await trusted();
  const writer = openSession(name);
  try {
    const pid = Number((await writer.query('SELECT pg_backend_pid();'))[0]![0]);
    await writer.query('UPDATE planets SET ore = ore + 1 WHERE id = 11;');
    await psql(name, `SELECT pg_terminate_backend(${pid});`);
    const after = await trusted([pid]);
    assert.is.not(
      after.get(tableKey({ schema: 'public', table: 'planets' })),
      before.get(tableKey({ schema: 'public', table: 'planets' })),
    );
  } finally {
    writer.kill();
  }
});

marks('a database that sets track_counts: the marks are not trusted', async () => {
  assert.ok(ready, 'setup failed');
  await psql(name, 'ALTER DATABASE planetarion SET track_counts = off;', { db: 'postgres' });
  try {
    // Our own session sees the database's setting too: either reason names it.
    const reading = await marksOf();
    assert.ok('untrusted' in reading && /track_counts/.test(reading.untrusted), JSON.stringify(reading));
  } finally {
    await psql(name, 'ALTER DATABASE planetarion RESET track_counts;', { db: 'postgres' });
  }
});

marks.run();
