// Tests of the database test helpers (test/helpers/db.ts) and of the seed (test/env/seed.sql),
// against a real planetarion-test-pg container.
//
// uvu 0.5.6 swallows an error thrown in a `before` hook (the suite then reports 0 passed and
// exits 0), so the container is started inside the first test and later tests check `ready`.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  psql,
  removeDb,
  rowCounts,
  scratchName,
  seedPlanetarion,
  startDb,
  testImage,
  writeRows,
  type RowWriter,
} from './helpers/db.ts';

const name = scratchName('pb-dbtest');
let ready = false;
let writer: RowWriter | undefined;

/** Row counts of the seed at scale 1. */
const expectedCounts: Record<string, number> = {
  'game.Mixed Case': 20,
  'game.a "quoted" table': 30,
  'public.alliances': 12,
  'public.chat_messages': 4000,
  'public.fleets': 3000,
  'public.news_events': 1100, // 1000 events, every 10th twice
  'public.planets': 2000,
  'public.research': 1200,
  'public.users': 300,
};

/** Every seeded table, quoted for SQL. */
const quotedTables = [
  'public.alliances',
  'public.users',
  'public.planets',
  'public.fleets',
  'public.chat_messages',
  'public.research',
  'public.news_events',
  'game."Mixed Case"',
  'game."a ""quoted"" table"',
];

/** A digest of every table's rows (ordered by their text form) in one database. */
async function contentDigest(db: string): Promise<string> {
  const sql = quotedTables
    .map(
      (t) =>
        `SELECT '${t.replace(/'/g, "''")}', md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) FROM ${t} AS r;`,
    )
    .join('\n');
  return psql(name, `${sql}\nSELECT 'tick_seq', last_value FROM tick_seq;`, { db });
}

function docker(...args: string[]): string {
  const r = spawnSync('docker', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

function needReady(): void {
  if (!ready) throw new Error('the database container did not start or seed (see the first test)');
}

const db = suite('test database helpers');

db.after(async () => {
  try {
    await writer?.stop();
  } catch {
    // the container is removed below anyway
  }
  try {
    await removeDb(name);
  } catch (error) {
    console.error(`cleanup of ${name} failed:`, error);
  }
});

db('startDb runs a healthy, network-less container and seedPlanetarion fills it', async () => {
  await startDb(name, { labels: { 'planetarion.test.suite': 'db' } });
  const inspect = docker(
    'inspect',
    '-f',
    '{{.State.Health.Status}} {{.HostConfig.NetworkMode}} {{index .Config.Labels "planetarion.test.suite"}} {{.Config.Image}}',
    name,
  );
  assert.is(inspect, `healthy none db ${testImage}`);
  assert.is(
    await psql(name, "SELECT current_user, current_database(), current_setting('server_version_num')::int / 10000;"),
    'planetarion_user|planetarion|15',
  );
  const started = Date.now();
  await seedPlanetarion(name);
  const ms = Date.now() - started;
  assert.ok(ms < 30_000, `seeding at scale 1 took ${ms} ms`);
  ready = true;
});

db('the seed has the expected row counts at scale 1', async () => {
  needReady();
  assert.equal(await rowCounts(name), expectedCounts);
});

db('hard-to-quote identifiers, the key-less table and the standalone sequence exist', async () => {
  needReady();
  const cols = await psql(
    name,
    `SELECT column_name FROM information_schema.columns
      WHERE table_schema = 'game' AND table_name = 'Mixed Case' ORDER BY ordinal_position;`,
  );
  assert.equal(cols.split('\n'), ['ID', 'Weird "Col"', 'select', 'naïve café']);
  const tables = await psql(
    name,
    `SELECT table_name FROM information_schema.tables WHERE table_schema = 'game' ORDER BY 1;`,
  );
  assert.equal(tables.split('\n'), ['Mixed Case', 'a "quoted" table']);
  assert.is(
    await psql(
      name,
      `SELECT count(*) FROM game."Mixed Case" m JOIN game."a ""quoted"" table" q ON q."Mixed Case ID" = m."ID" WHERE m."Weird ""Col""" IS NOT NULL;`,
    ),
    '16',
  );
  assert.is(
    await psql(name, `SELECT pg_get_serial_sequence('game."a ""quoted"" table"', 'id');`),
    'game."a ""quoted"" table_id_seq"',
  );
  assert.is(
    await psql(
      name,
      `SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.news_events'::regclass AND contype = 'p';`,
    ),
    '0',
  );
  assert.is(await psql(name, `SELECT count(*) - count(DISTINCT n.*) FROM news_events n;`), '100');
  assert.is(await psql(name, `SELECT last_value || ' ' || is_called FROM tick_seq;`), '4321 true');
  assert.is(
    await psql(name, `SELECT count(*) FROM pg_depend WHERE objid = 'tick_seq'::regclass AND deptype IN ('a', 'i');`),
    '0',
    'tick_seq is owned by no column',
  );
  assert.is(
    await psql(
      name,
      `SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace IN ('public'::regnamespace, 'game'::regnamespace);`,
    ),
    '7',
  );
});

db('seeded NULL, unicode, bytea, numeric and tricky text values read back exactly', async () => {
  needReady();
  assert.is(await psql(name, `SELECT name || '|' || tag FROM alliances WHERE id = 1;`), 'Ünïcødé Ållïance ☄|ÜÅ☄');
  assert.is(await psql(name, `SELECT count(*) FROM users WHERE last_login IS NULL;`), String(Math.floor(300 / 7)));
  const avatar = `00ff${createHash('md5').update('avatar5').digest('hex')}000a0d5c27`;
  assert.is(await psql(name, `SELECT encode(avatar, 'hex') FROM users WHERE id = 5;`), avatar);
  assert.is(await psql(name, `SELECT avatar IS NULL FROM users WHERE id = 6;`), 't');
  assert.is(
    await psql(name, `SELECT metal || ' ' || score || ' ' || size || ' ' || growth FROM planets WHERE id = 2000;`),
    '2469134000 2469134.000 0.1 285.7142857142857',
  );
  assert.is(await psql(name, `SELECT body FROM chat_messages WHERE id = 2;`), 'path C:\\Games\\PA\\save2\\');
  assert.is(await psql(name, `SELECT body FROM chat_messages WHERE id = 6;`), 'before\n\\.\nafter 6');
  assert.is(await psql(name, `SELECT body FROM chat_messages WHERE id = 4;`), 'tab\tseparated\tvalues\t4\r\nCRLF');
});

db('psql sends SQL on stdin: NULL, unicode and bytea round-trip; errors throw with stderr', async () => {
  needReady();
  const email = `Ünï'cødé "$HOME" \`id\` ☄🚀@planetarion.test`;
  const sql = `INSERT INTO users (email, password_hash, created_at, last_login, avatar)
    VALUES ('${email.replace(/'/g, "''")}', 'x', timestamptz '2024-05-05 05:05:05.123456+00', NULL, '\\x00de00ad'::bytea)
    RETURNING id;`;
  const id = Number(await psql(name, sql));
  assert.ok(id > 300);
  assert.is(
    await psql(
      name,
      `SELECT email, last_login IS NULL, encode(avatar, 'hex'), created_at AT TIME ZONE 'UTC' FROM users WHERE id = ${id};`,
    ),
    `${email}|t|00de00ad|2024-05-05 05:05:05.123456`,
  );
  await psql(name, `DELETE FROM users WHERE id = ${id};`);
  try {
    await psql(name, 'SELECT * FROM no_such_table;');
    assert.unreachable('psql should throw');
  } catch (error) {
    assert.instance(error, Error);
    assert.match((error as Error).message, /relation "no_such_table" does not exist/);
  }
});

db('the seed is deterministic: a second database seeded the same way has identical contents', async () => {
  needReady();
  await psql(name, 'CREATE DATABASE planetarion_copy;');
  await seedPlanetarion(name, { db: 'planetarion_copy' });
  const a = await contentDigest('planetarion');
  const b = await contentDigest('planetarion_copy');
  assert.is(b, a);
  assert.is(a.split('\n').length, quotedTables.length + 1);
  await psql(name, 'DROP DATABASE planetarion_copy;');
});

db('writeRows keeps committing rows until stopped, chat row and news twin in one transaction', async () => {
  needReady();
  writer = await writeRows(name, { intervalMs: 2 });
  const first = await writer.count();
  assert.ok(first > 0);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const written = await writer.stop();
  writer = undefined;
  assert.ok(written > first, `wrote ${written} rows (had ${first} at start)`);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.is(
    await psql(name, `SELECT count(*) FROM chat_messages WHERE channel LIKE '#writer-%';`),
    String(written),
    'no rows after stop',
  );
  assert.is(await psql(name, `SELECT count(*) FROM news_events WHERE kind LIKE '#writer-%';`), String(written));
  assert.is(await psql(name, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pb-writer-%';`), '0');
});

db('removeDb removes the container, and a missing container is fine', async () => {
  needReady();
  await removeDb(name);
  assert.is(docker('ps', '-a', '--filter', `name=^/${name}$`, '--format', '{{.Names}}'), '');
  await removeDb(name);
});

db.run();
