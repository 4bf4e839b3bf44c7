// The deployment's fence on a real PostgreSQL container: once raised, no session of the live
// database can commit a write the snapshot would miss (a row in an existing table, a table
// created during the fence, a new large object), reads and a whole backup-database run (which
// reads the large objects) pass, and
// release() lets every blocked write through. Also: the same cluster on both sides is refused.
import { spawnSync } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LiveFence, verifyOwnCluster } from '../lib/deploy/fence.ts';
import { Logger } from '../lib/log.ts';
import { createShell } from '../lib/host/shell.ts';
import { startTool, waitFor } from './helpers/cli.ts';
import { psql, removeDb, scratchName, startDb } from './helpers/db.ts';
import { TempDirs } from './helpers/tmp.ts';

const live = scratchName('pb-fence');
const temp = new TempDirs('planetarion-fence-');
const target = { docker: 'docker', container: live, user: 'planetarion_user', database: 'planetarion' };
const $ = createShell();
const log = new Logger({});

/** A statement in a new session (like a host cron tick's `docker exec psql`), giving up after 2 s waiting for a lock. */
function attempt(sql: string): { ok: boolean; stderr: string } {
  const r = spawnSync(
    'docker',
    [
      'exec',
      '-e',
      'PGOPTIONS=-c lock_timeout=2s',
      live,
      'psql',
      '-X',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '-U',
      'planetarion_user',
      '-d',
      'planetarion',
      '-c',
      sql,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  return { ok: r.status === 0, stderr: r.stderr };
}

const fence = suite('the deployment fence on a real PostgreSQL');

fence('setup: a live database with a table and a large object', async () => {
  await startDb(live);
  await psql(live, "CREATE TABLE ticks (n int); INSERT INTO ticks VALUES (1); SELECT lo_from_bytea(0, 'before');");
});

fence(
  'raised: no row, new table or large object commits; reads and a whole backup pass; released: the writes go through',
  async () => {
    const raised = await LiveFence.raise($, target, log);
    try {
      for (const write of [
        'INSERT INTO ticks VALUES (2)',
        'CREATE TABLE late (n int)',
        "SELECT lo_from_bytea(0, 'during')",
      ]) {
        const r = attempt(write);
        assert.not.ok(r.ok, `committed during the fence: ${write}`);
        assert.match(r.stderr, /lock timeout/, write);
      }
      assert.ok(attempt('SELECT count(*) FROM ticks').ok, 'a read during the fence');
      const dir = temp.make();
      const backup = startTool('backup-database', ['--json'], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: live });
      // A backup the fence blocks would wait for it forever: give up (and fail) after a generous while.
      const timer = setTimeout(() => backup.child.kill('SIGTERM'), 600_000);
      const done = await backup.done.finally(() => clearTimeout(timer));
      assert.is(done.code, 0, done.stderr);
    } finally {
      await raised.release();
    }
    assert.ok(
      attempt("INSERT INTO ticks VALUES (2); CREATE TABLE late (n int); SELECT lo_from_bytea(0, 'after')").ok,
      'writes after the release',
    );
    assert.is(
      await psql(live, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'", { db: 'postgres' }),
      't',
    );
  },
);

fence(
  'commitWithin: an ALTER TABLE commits with the fence up; tables and catalogs are locked again after it; release leaves no session',
  async () => {
    const raised = await LiveFence.raise($, target, log);
    try {
      await raised.commitWithin('ALTER TABLE ticks REPLICA IDENTITY FULL;');
      assert.is(
        await psql(live, "SELECT relreplident FROM pg_class WHERE relname = 'ticks'"),
        'f',
        'the ALTER committed',
      );
      for (const write of [
        'INSERT INTO ticks VALUES (3)',
        'CREATE TABLE later (n int)',
        "SELECT lo_from_bytea(0, 'within')",
      ]) {
        const r = attempt(write);
        assert.not.ok(r.ok, `committed after commitWithin: ${write}`);
        assert.match(r.stderr, /lock timeout/, write);
      }
      assert.is(
        await psql(live, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'", { db: 'postgres' }),
        't',
      );
    } finally {
      await raised.release();
    }
    await psql(live, 'ALTER TABLE ticks REPLICA IDENTITY DEFAULT');
    // Neither the lock session nor the admin session outlives the fence (a backend leaves shortly after its client).
    const others =
      "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";
    await waitFor(
      'the fence sessions to end',
      async () => (await psql(live, others, { db: 'postgres' })) === '0',
      10_000,
      100,
    );
  },
);

fence('the same cluster on both sides is refused naming the system_identifier; two clusters pass', async () => {
  await verifyOwnCluster($, target, target).then(
    () => assert.unreachable('equal clusters passed'),
    (error: Error) => assert.match(error.message, /is the live cluster \(both have system_identifier \d+\)/),
  );
  const other = scratchName('pb-fence-other');
  try {
    await startDb(other);
    await verifyOwnCluster($, target, { ...target, container: other });
  } finally {
    await removeDb(other);
  }
});

fence.after(async () => {
  await removeDb(live);
  temp.removeAll();
});
fence.run();
