// deploy-to-qnap --local fills the new slot online, by PostgreSQL's logical replication, while the
// game writes: real Compose stacks shaped like the game's (no container_name, driver_opts bind
// data folder, a one-shot migration), a host writer committing a tick every 50 ms (one held psql session) that also
// updates and deletes rows of a table without a key. No tick is lost, the game sees no error,
// and no subscription, publication or replication slot is left on either side, whether the
// deployment switches, is interrupted during the copy, or fails its proof.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { takeFingerprint } from '../lib/dump/fingerprint.ts';
import { runTool, startTool, waitFor } from './helpers/cli.ts';
import {
  type HostWriter,
  installDockerHook,
  startGroup,
  startHostWriter,
  stateOf,
  stopWriter,
  whileWriting,
} from './helpers/deploy-faults.ts';
import {
  containersOf,
  health,
  makeTestNas,
  sqlIn,
  startOldScriptStack,
  type TestNas,
  volumesOf,
} from './helpers/stack.ts';
import { openSession } from './helpers/db.ts';

const nases: TestNas[] = [];
const cleanAll = () => {
  while (nases.length) nases.pop()!.cleanup();
};
const deployArgs = (n: TestNas, args: string[]) => [
  '--local',
  '--json',
  '--health-timeout',
  '180',
  ...n.deployArgs,
  ...args,
];
const deploy = (n: TestNas, args: string[] = []) => runTool('deploy-to-qnap', deployArgs(n, args), n.env);
const sql = sqlIn;

/** The game's tables beside app_writes: ticks with a sequence, a keyless table the writer updates and deletes from, and a bigger one to copy. */
const gameSchema = `
  CREATE TABLE ticks (id bigserial PRIMARY KEY, n int NOT NULL UNIQUE, at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE scores (player int NOT NULL, points int NOT NULL);
  INSERT INTO scores SELECT g, 0 FROM generate_series(1, 50) g;
  CREATE TABLE planets (id int PRIMARY KEY, name text NOT NULL, ore bigint NOT NULL);
  INSERT INTO planets SELECT g, 'planet ' || g, g * 7 FROM generate_series(1, 200000) g;
  CREATE SEQUENCE fleet_numbers START 1000;
  SELECT nextval('fleet_numbers') FROM generate_series(1, 5);`;

/** The game's tick: a numbered tick, an update of a keyless row, a delete and re-insert of another, a sequence value. */
const gameTick = `INSERT INTO ticks (n) VALUES ($i); UPDATE scores SET points = points + 1 WHERE player = $i % 50 + 1; DELETE FROM scores WHERE player = 1000 + $i % 7; INSERT INTO scores VALUES (1000 + $i % 7, $i); SELECT nextval('fleet_numbers');`;
const startWriter = (container: string) => startHostWriter(container, gameTick);

/** A live slot made by this tool, with the game's tables, and the writer running. */
async function liveStack(): Promise<{
  n: TestNas;
  liveSlot: { project: string; slotId: string };
  writer: ReturnType<typeof startWriter>;
}> {
  const n = makeTestNas('real');
  nases.push(n);
  const first = await deploy(n);
  assert.is(first.code, 0, first.stderr);
  sql(n.container, gameSchema);
  const writer = startWriter(n.container);
  await waitFor('the writer to commit', () => writer.committed().length > 3, 180_000, 100);
  return { n, liveSlot: JSON.parse(first.stdout).live, writer };
}

/** No replication object of the deployment on a server. */
function assertNoReplication(container: string): void {
  assert.is(sql(container, 'SELECT count(*) FROM pg_replication_slots'), '0', `replication slots left on ${container}`);
  assert.is(sql(container, 'SELECT count(*) FROM pg_publication'), '0', `publications left on ${container}`);
  assert.is(sql(container, 'SELECT count(*) FROM pg_subscription'), '0', `subscriptions left on ${container}`);
}

/** The keyless table's identity is the one it had before the deployment. */
const identityOf = (container: string) => sql(container, "SELECT relreplident FROM pg_class WHERE relname = 'scores'");

/** Errors the game must never see: a publication over a table without replica identity. */
const identityErrors = (errors: string[]) => errors.filter((e) => /replica identity/i.test(e));

const online = suite('deploy-to-qnap: online A-B deployment by logical replication');

// Each test's stack goes when it ends: nine stacks of healthchecks and writers left running until
// the suite's end slowed every later test of it.
online.after.each(cleanAll);
online.after(cleanAll);

online(
  'the second deployment fills the new slot online while the writer commits: no tick lost, no error, sequences copied, nothing of the replication left',
  async () => {
    const { n, writer } = await liveStack();
    const plan = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
    assert.is(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, /Fill: online, by logical replication/);
    assert.match(plan.stdout, /\d\. replicate: /);
    assert.match(plan.stdout, /\d\. start \+ detach: docker start .*; at the same time, drop subscription /);
    const r = await whileWriting(writer, () => deploy(n));
    assert.is(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.is(result.mode, 'ab');
    assert.match(r.stderr, /Subscription planetarion_deploy_s\d+_\d+: .* copies 'planetarion'/);
    assert.match(r.stderr, /REPLICA IDENTITY FULL for the deployment on the tables without a key: .*public\.scores/);
    assert.match(r.stderr, /Fingerprint proven: [0-9a-f]{64}/);
    assert.match(result.fingerprint, /^[0-9a-f]{64}$/);
    // The freeze proved again only what the game wrote; the 200 000 planets kept their pre-proof digests.
    assert.match(r.stderr, /Pre-proof while the game runs: \d+ tables fingerprinted on both databases/);
    // The copy is on disk before the writers stop: stopping the app would write it back otherwise.
    assert.match(
      r.stderr,
      /Wrote the dirty page cache to disk before the freeze \(\d+ MB\) in [\d.]+ s[\s\S]*Stopping the live writers/,
    );
    const again = provedAgain(r.stderr);
    assert.ok(again.includes('public.ticks') && again.includes('public.scores'), again.join(', '));
    assert.not.ok(again.includes('public.planets'), again.join(', '));
    assert.is(result.backupUsed, null);
    assert.ok(result.downtimeMs > 0);
    assert.equal(identityErrors(writer.errors()), [], 'the game got replica identity errors');
    assertTicksKept(n.container, writer);
    assertNoReplication(n.container);
    assert.is(identityOf(n.container), 'd');
    // The old slot, started again: its identity put back, no slot or publication, and the new one's sequences are at least its.
    const oldDb = `${n.container}-${result.previous.slotId}`;
    assert.is(containersOf(n.project)[oldDb], 'exited');
    execFileSync('docker', ['start', oldDb]);
    await waitFor('the old database', () => health(oldDb) === 'healthy', 120_000, 200);
    assertNoReplication(oldDb);
    assert.is(identityOf(oldDb), 'd');
    for (const sequence of ['ticks_id_seq', 'fleet_numbers', 'app_writes_id_seq']) {
      const value = (c: string) => BigInt(sql(c, `SELECT last_value FROM ${sequence}`));
      assert.ok(value(n.container) >= value(oldDb), `${sequence} went back`);
    }
    // The rows the old slot ended with are the new slot's rows of that time (nothing written after the switch counts).
    assert.is(sql(oldDb, 'SELECT count(*) FROM planets'), sql(n.container, 'SELECT count(*) FROM planets'));
    // The old database is the frozen live one: its whole fingerprint, taken now, is the one the staged proof recorded.
    assert.is(await fullFingerprint(oldDb), result.fingerprint);
    execFileSync('docker', ['stop', oldDb]);
  },
);

/** The deployment failed its proof on planets, with one clear line, and left the live slot as it was. */
async function assertPlanetsNotProven(
  r: { code: number | null; stderr: string },
  ...intact: Parameters<typeof assertLiveIntact>
): Promise<void> {
  assert.is(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /the new database's fingerprint differs from the frozen live database's \(table public\.planets\)/,
  );
  assert.not.match(r.stderr, / {4}at /);
  await assertLiveIntact(...intact);
}

/** The tables the freeze fingerprinted again, from the deployment's log (empty when none). */
function provedAgain(stderr: string): string[] {
  const line =
    /Fingerprint proven: .*; (\d+) table\(s\) fingerprinted again under the freeze(?: \(([^)]*)\))?, \d+ unchanged since the pre-proof/.exec(
      stderr,
    );
  assert.ok(line, 'the freeze did not use the pre-proof');
  return line[2] ? line[2].split(', ') : [];
}

/** The whole fingerprint of a database, as a restore would take it. */
async function fullFingerprint(container: string): Promise<string> {
  const session = openSession(container);
  try {
    return (await takeFingerprint(session)).sha256;
  } finally {
    await session.close();
  }
}

/**
 * A docker wrapper that runs SQL on the live database at the first `docker stop`: the freeze
 * stopping the writers, right after the pre-proof. Records the stop's arguments in `<sql>.args`.
 */
function sqlAtFreeze(n: TestNas, sqlText: string): { path: string; args: string } {
  const path = join(n.dir, 'docker-at-freeze');
  const file = join(n.dir, 'at-freeze.sql');
  writeFileSync(file, sqlText);
  writeFileSync(
    path,
    `#!/bin/sh
if [ "$1" = stop ] && [ -f '${file}' ]; then
  mv '${file}' '${file}.run'
  echo "$@" > '${file}.args'
  docker exec -i '${n.container}' psql -X -q -v ON_ERROR_STOP=1 -U planetarion_user -d planetarion < '${file}.run' > '${file}.out' 2>&1
fi
exec docker "$@"
`,
    { mode: 0o755 },
  );
  return { path, args: `${file}.args` };
}

online(
  'a change after the pre-proof: a column added to an untouched table (no row written) fails the proof; a row updated in it is proved again under the freeze and switches',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      const before = containersOf(n.project);
      const added = sqlAtFreeze(n, 'ALTER TABLE public.planets ADD COLUMN moons int NOT NULL DEFAULT 3;');
      const r = await runTool('deploy-to-qnap', deployArgs(n, []), { ...n.env, DOCKER: added.path });
      assert.match(readFileSync(added.args, 'utf8'), /^stop .*app/, "the change ran at the writers' stop");
      assert.match(r.stderr, /Pre-proof while the game runs/);
      await assertPlanetsNotProven(r, n, liveSlot, before, writer);

      sql(n.container, 'ALTER TABLE public.planets DROP COLUMN moons;');
      const updated = sqlAtFreeze(n, 'UPDATE public.planets SET ore = -5 WHERE id = 5;');
      const again = await runTool('deploy-to-qnap', deployArgs(n, []), { ...n.env, DOCKER: updated.path });
      assert.is(again.code, 0, again.stderr);
      assert.match(readFileSync(updated.args, 'utf8'), /^stop .*app/, "the change ran at the writers' stop");
      assert.ok(provedAgain(again.stderr).includes('public.planets'), again.stderr);
      assert.is(sql(n.container, 'SELECT ore FROM planets WHERE id = 5'), '-5');
    } finally {
      stopWriter(writer);
    }
  },
);

/** The log line of a deployment whose subscription has begun to copy the live tables. */
const copyStarted = /Subscription planetarion_deploy_\S+: .* copies/;

/** Starts a deployment and waits until its log shows `line` (polling every `pollMs`). */
async function deployUntil(n: TestNas, what: string, line: RegExp, timeoutMs: number, pollMs = 50) {
  const started = startTool('deploy-to-qnap', deployArgs(n, []), n.env);
  let stderr = '';
  started.child.stderr!.on('data', (d: string) => (stderr += d));
  await waitFor(what, () => line.test(stderr), timeoutMs, pollMs);
  return started;
}

/** SQL that makes the new slot's copy of `planets` hang (an ALWAYS trigger fires in the subscription's workers only). */
const holdCopy = `
  CREATE FUNCTION hold_copy() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN IF current_setting('session_replication_role') = 'replica' THEN PERFORM pg_sleep(3600); END IF; RETURN NEW; END $$;
  CREATE TRIGGER hold_copy BEFORE INSERT ON planets FOR EACH ROW EXECUTE FUNCTION hold_copy();
  ALTER TABLE planets ENABLE ALWAYS TRIGGER hold_copy;`;
/** SQL that makes the new slot's rows of `planets` differ from the live ones (the proof must fail). */
const tamperCopy = `
  CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN IF current_setting('session_replication_role') = 'replica' AND NEW.id = 7 THEN NEW.ore := -1; END IF; RETURN NEW; END $$;
  CREATE TRIGGER tamper BEFORE INSERT ON planets FOR EACH ROW EXECUTE FUNCTION tamper();
  ALTER TABLE planets ENABLE ALWAYS TRIGGER tamper;`;

/** After an aborted deployment: the live slot as it was, writing, no committed tick lost, nothing of the replication or of the new slot left, no journal. */
async function assertLiveIntact(
  n: TestNas,
  liveSlot: { project: string; slotId: string },
  before: Record<string, string>,
  writer: ReturnType<typeof startWriter>,
): Promise<void> {
  await waitFor('the writers to run', () => containersOf(n.project)[`${n.project}-app`] === 'running', 60_000, 200);
  assert.equal(containersOf(n.project), before);
  assert.equal(
    volumesOf(`${n.project}-s`).filter((v) => !v.startsWith(liveSlot.project)),
    [],
  );
  assertNoReplication(n.container);
  assert.not.ok(existsSync(join(n.dir, 'deploy/staging.json')), 'the rollback removed the slot but left its journal');
  assert.not.ok(existsSync(join(n.dir, 'deploy/replication.json')), 'everything put back, but the journal is left');
  assert.is(identityOf(n.container), 'd');
  assert.is(sql(n.container, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'"), 't');
  const committed = writer.committed().length;
  await waitFor('the writer to commit again', () => writer.committed().length > committed + 2, 60_000, 100);
  assert.equal(identityErrors(writer.errors()), [], 'the game got replica identity errors');
  assertTicksKept(n.container, writer);
}

/** Every tick the writer saw committed is in the database that now has the live name. */
function assertTicksKept(container: string, writer: HostWriter): void {
  const live = new Set(sql(container, 'SELECT n FROM ticks').split('\n').map(Number));
  const missing = writer.committed().filter((i) => !live.has(i));
  assert.equal(missing, [], `committed ticks missing from ${container}: ${missing.join(', ')}`);
}

online(
  'SIGTERM while the tables are being copied: exit 1, subscription, publication and replication slots dropped, the identity put back, the live slot writing',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      sql(n.container, holdCopy);
      const before = containersOf(n.project);
      const started = await deployUntil(n, 'the copy to start', copyStarted, 600_000);
      // The table copy's own replication slot exists on the live side: the copy runs.
      await waitFor(
        'the table copy',
        () =>
          Number(
            sql(n.container, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pg\\_%\\_sync\\_%'"),
          ) > 0,
        120_000,
        100,
      );
      started.child.kill('SIGTERM');
      const r = await started.done;
      assert.is(r.code, 1, r.stderr);
      assert.match(r.stderr, /Error: interrupted by SIGTERM/);
      assert.not.match(r.stderr, / {4}at /);
      await assertLiveIntact(n, liveSlot, before, writer);
    } finally {
      stopWriter(writer);
    }
  },
);

online(
  'a failing proof (the new rows differ): exit 1 before the switch, nothing of the replication left, the identity put back, the live slot writing',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      sql(n.container, tamperCopy);
      const before = containersOf(n.project);
      await assertPlanetsNotProven(await deploy(n), n, liveSlot, before, writer);
      // The next deployment sweeps nothing (nothing was left) and, without the tampering, switches.
      sql(n.container, 'DROP TRIGGER tamper ON planets');
      const again = await deploy(n);
      assert.is(again.code, 0, again.stderr);
      assert.not.match(again.stderr, /replication leftovers/);
    } finally {
      stopWriter(writer);
    }
  },
);

online(
  'a large object and a populated materialized view made during the copy fail the proof (replication copies neither); the live slot serves, and the next plan fills offline',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      const before = containersOf(n.project);
      const started = await deployUntil(n, 'the copy to start', copyStarted, 600_000);
      sql(
        n.container,
        "SELECT lo_from_bytea(0, 'galaxy map'); CREATE MATERIALIZED VIEW leaders AS SELECT player, points FROM scores;",
      );
      const r = await started.done;
      assert.is(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /the live database holds 1 large object, 1 populated materialized view, which logical replication does not copy; it came during the copy/,
      );
      assert.not.match(r.stderr, / {4}at /);
      await assertLiveIntact(n, liveSlot, before, writer);
      const plan = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
      assert.is(plan.code, 0, plan.stderr);
      assert.match(
        plan.stdout,
        /Fill: offline \(freeze, fresh dump, restore\): the live database holds 1 large object/,
      );
    } finally {
      stopWriter(writer);
    }
  },
);

/** The new slot's database containers (an interrupted run's slot that was not removed). */
const newDatabases = (n: TestNas) =>
  execFileSync('docker', ['ps', '-a', '--format', '{{.Names}}'])
    .toString()
    .split('\n')
    .filter((name) => name.startsWith(`${n.container}-s`));
/** Replication slots of the table copies on the live side: the copy runs. */
const copySlots = (container: string) =>
  Number(sql(container, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pg\\_%\\_sync\\_%'"));

online(
  'SIGKILL of the deployment during the copy, the keyless table FULL: the journal records it, --status puts back its identity and drops slot, publication and subscription; the next deployment switches',
  async () => {
    const { n, writer } = await liveStack();
    try {
      sql(n.container, holdCopy);
      const started = startGroup('deploy-to-qnap', deployArgs(n, []), n.env);
      await waitFor(
        'the keyless table FULL and the copy running',
        () => identityOf(n.container) === 'f' && copySlots(n.container) > 0,
        600_000,
        200,
      );
      process.kill(-started.pid, 'SIGKILL');
      await started.done;
      const journal = JSON.parse(readFileSync(join(n.dir, 'deploy/replication.json'), 'utf8'));
      assert.ok(
        journal.identities.some(
          (i: { table: string; old: string }) => i.table === 'public.scores' && i.old === 'DEFAULT',
        ),
        JSON.stringify(journal),
      );
      assert.is(identityOf(n.container), 'f', 'nothing put back by a killed run');
      const orphans = newDatabases(n);
      assert.is(orphans.length, 1, orphans.join(' '));
      assert.is(sql(orphans[0]!, 'SELECT count(*) FROM pg_subscription'), '1');
      // The killed run's lock counts as held for its first seconds (lib/host/lock.ts): --status
      // says so, and puts the deployment back once it may take the lock.
      let status = await runTool('deploy-to-qnap', ['--local', '--status', ...n.deployArgs], n.env);
      await waitFor(
        '--status to put back the interrupted deployment',
        async () => {
          if (!/is journalled and another run holds the lock/.test(status.stdout)) return true;
          status = await runTool('deploy-to-qnap', ['--local', '--status', ...n.deployArgs], n.env);
          return false;
        },
        120_000,
        1000,
      );
      assert.is(status.code, 0, status.stderr);
      assert.match(status.stdout, /An interrupted online deployment was put back/);
      assert.not.match(status.stdout, /LEFTOVER of an interrupted online deployment/);
      assert.match(
        status.stdout,
        /LEFTOVER slot \S+ of an interrupted deployment \(deploy\/staging\.json\): the next deployment removes it/,
      );
      assert.is(identityOf(n.container), 'd');
      assertNoReplication(n.container);
      assert.is(sql(orphans[0]!, 'SELECT count(*) FROM pg_subscription'), '0');
      assert.not.ok(existsSync(join(n.dir, 'deploy/replication.json')));
      assert.equal(identityErrors(writer.errors()), [], 'the game got replica identity errors');
      // The killed run's slot holds a copy of the database: the staging journal names it.
      const staged = JSON.parse(readFileSync(join(n.dir, 'deploy/staging.json'), 'utf8'));
      assert.ok(orphans[0]!.endsWith(staged.project.slice(staged.project.lastIndexOf('-'))), JSON.stringify(staged));
      assert.is(staged.folders.length, 1, JSON.stringify(staged));
      assert.ok(existsSync(staged.folders[0]));
      assert.ok(staged.folders[0].startsWith(join(n.share, 'pgdata-s')), staged.folders[0]);
      const plan = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
      assert.match(plan.stdout, new RegExp(`The staging journal names ${staged.project}, a slot an interrupted`));
      // The next deployment finds nothing to put back, removes that slot and, without the held copy, switches.
      sql(n.container, 'DROP TRIGGER hold_copy ON planets');
      const again = await deploy(n);
      assert.is(again.code, 0, again.stderr);
      assert.not.match(again.stderr, /replication leftovers|replication journal/);
      assert.match(
        again.stderr,
        new RegExp(`Removing slot ${staged.project}, which an interrupted deployment was building`),
      );
      assert.not.ok(newDatabases(n).includes(orphans[0]!), `${orphans[0]} is still there`);
      assert.not.ok(existsSync(staged.folders[0]), `${staged.folders[0]} is still there`);
      assert.is(volumesOf(staged.project).length, 0, volumesOf(staged.project).join(' '));
      assert.not.ok(existsSync(join(n.dir, 'deploy/staging.json')));
      assertNoReplication(n.container);
      assert.is(identityOf(n.container), 'd');
    } finally {
      stopWriter(writer);
    }
  },
);

/**
 * SQL that makes the new slot's copy of `planets` fail on a duplicate key (row 8 inserted by a
 * trigger before the copy reaches it). The table is schema-qualified: replication workers run with
 * an empty search_path.
 */
const clashCopy = `
  CREATE FUNCTION clash() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN IF current_setting('session_replication_role') = 'replica' AND NEW.id = 7 THEN INSERT INTO public.planets VALUES (8, 'clash', 0); END IF; RETURN NEW; END $$;
  CREATE TRIGGER clash BEFORE INSERT ON planets FOR EACH ROW EXECUTE FUNCTION clash();
  ALTER TABLE planets ENABLE ALWAYS TRIGGER clash;`;

online(
  'a copy that makes no progress (a table copy stuck) for PLANETARION_REPLICATION_STALL: exit 1 naming the stall and the table, nothing of the replication left, the identity put back, the live slot writing',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      sql(n.container, holdCopy);
      const before = containersOf(n.project);
      const r = await runTool('deploy-to-qnap', deployArgs(n, []), { ...n.env, PLANETARION_REPLICATION_STALL: '5' });
      assert.is(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /Error: the online copy made no progress for 5 s \(subscription planetarion_deploy_\S+ copying [^)]*planets[^)]*, \d+ of \d+ tables done\): /,
      );
      assert.match(r.stderr, /PLANETARION_REPLICATION_STALL/);
      assert.not.match(r.stderr, / {4}at /);
      await assertLiveIntact(n, liveSlot, before, writer);
    } finally {
      stopWriter(writer);
    }
  },
);

online(
  "a table copy failing on a duplicate key: exit 1 with the worker's error, nothing of the replication left, the identity put back, the live slot writing",
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      sql(n.container, clashCopy);
      const before = containersOf(n.project);
      const r = await deploy(n);
      assert.is(r.code, 1, r.stderr);
      assert.match(r.stderr, /Error: the subscription in \S+ failed: .*duplicate key value violates unique constraint/);
      assert.not.match(r.stderr, / {4}at /);
      await assertLiveIntact(n, liveSlot, before, writer);
    } finally {
      stopWriter(writer);
    }
  },
);

online(
  'SIGTERM in the freeze (the writers being stopped): exit 1, the fence lifted, nothing of the replication left, the identity put back, no committed tick lost, the live slot writing',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      const before = containersOf(n.project);
      const started = await deployUntil(n, 'the freeze', /Stopping the live writers/, 900_000, 20);
      started.child.kill('SIGTERM');
      const r = await started.done;
      assert.is(r.code, 1, r.stderr);
      assert.match(r.stderr, /Error: interrupted by SIGTERM/);
      assert.not.match(r.stderr, / {4}at /);
      await assertLiveIntact(n, liveSlot, before, writer);
    } finally {
      stopWriter(writer);
    }
  },
);

online(
  'SIGTERM during the switch (a rename held): the switch completes, exit 1 saying so, nothing of the replication left on either side, identities put back, no committed tick lost',
  async () => {
    const { n, writer } = await liveStack();
    const hook = installDockerHook(n);
    const r = await whileWriting(writer, async () => {
      writeFileSync(hook.hook, 'slow * 2\n');
      const started = startTool('deploy-to-qnap', deployArgs(n, []), { ...n.env, DOCKER: hook.path });
      await waitFor('the first rename of the switch', () => existsSync(`${hook.hook}.slowed`), 900_000, 20);
      started.child.kill('SIGTERM');
      return started.done;
    });
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /interrupted by SIGTERM after the switch/);
    assert.not.match(r.stderr, / {4}at /);
    assert.is(stateOf(n).lastDeploy.outcome, 'switched');
    assert.equal(identityErrors(writer.errors()), [], 'the game got replica identity errors');
    assertNoReplication(n.container);
    assert.is(identityOf(n.container), 'd');
    assert.not.ok(existsSync(join(n.dir, 'deploy/replication.json')));
    assertTicksKept(n.container, writer);
    const oldDb = `${n.container}-${stateOf(n).previous!.slotId}`;
    execFileSync('docker', ['start', oldDb]);
    await waitFor('the old database', () => health(oldDb) === 'healthy', 120_000, 200);
    assertNoReplication(oldDb);
    assert.is(identityOf(oldDb), 'd');
    execFileSync('docker', ['stop', oldDb]);
  },
);

/**
 * Runs a deployment and sends it SIGTERM the moment its log shows `at`, and checks that the signal
 * landed there: after that line, before the next phase's.
 */
async function terminateAt(n: TestNas, at: RegExp) {
  const started = startTool('deploy-to-qnap', deployArgs(n, []), n.env);
  let stderr = '';
  let sent = false;
  started.child.stderr!.on('data', (d: string) => {
    stderr += d;
    if (!sent && at.test(stderr)) {
      sent = true;
      started.child.kill('SIGTERM');
    }
  });
  const r = await started.done;
  assert.ok(sent, `the deployment never logged ${at}: ${r.stderr}`);
  const after = r.stderr.slice(at.exec(r.stderr)!.index);
  assert.match(after, /SIGTERM received/);
  assert.not.match(
    after.slice(0, after.indexOf('SIGTERM received')).split('\n').slice(1).join('\n'),
    /Phase \d+\/\d+ /,
  );
  return r;
}

online(
  'SIGTERM at each later phase (the pre-proof, the proof, the new services starting beside the detach, the release of the live database): each time exit 1, the live slot as it was and writing, nothing of the replication left, no committed tick lost',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      for (const at of [
        /every table copied, the new database follows the live one/,
        /Phase \d+\/\d+ prove: /,
        /Phase \d+\/\d+ start \+ detach: /,
        /Phase \d+\/\d+ release: /,
      ]) {
        const before = containersOf(n.project);
        const r = await terminateAt(n, at);
        assert.is(r.code, 1, r.stderr);
        assert.match(r.stderr, /Error: interrupted by SIGTERM/);
        assert.not.match(r.stderr, /after the switch/);
        assert.not.match(r.stderr, / {4}at /);
        await assertLiveIntact(n, liveSlot, before, writer);
      }
    } finally {
      stopWriter(writer);
    }
  },
);

online(
  "the new slot's app never healthy after the online fill: exit 1 naming it, the live slot as it was and writing, nothing of the replication left, the identity put back",
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      // The new app's check always fails and counts from 2 s, so it turns 'unhealthy' quickly.
      n.setCompose((yaml) => {
        const edited = yaml
          .replace('test: ["CMD", "test", "-f", "/tmp/healthy"]', 'test: ["CMD", "false"]')
          .replace('start_period: 90s', 'start_period: 2s');
        assert.is.not(edited, yaml);
        return edited;
      });
      const before = containersOf(n.project);
      const r = await deploy(n);
      assert.is(r.code, 1, r.stderr);
      assert.ok(/Fingerprint proven/.test(r.stderr), r.stderr);
      assert.ok(/did not become healthy.*rolled back/.test(r.stderr), r.stderr);
      assert.not.match(r.stderr, / {4}at /);
      await assertLiveIntact(n, liveSlot, before, writer);
    } finally {
      stopWriter(writer);
    }
  },
);

online(
  'a live slot without wal_level=logical and a socket volume (deployed by the old scripts) is deployed offline, and the plan says why and that the next one is online; large objects, populated materialized views and unlogged tables keep the fill offline, and arrive',
  async () => {
    const n = makeTestNas('real');
    nases.push(n);
    const legacyDb = startOldScriptStack(n);
    const plan = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
    assert.is(plan.code, 0, plan.stderr);
    assert.match(
      plan.stdout,
      /Fill: offline \(freeze, fresh dump, restore\): the live database runs with wal_level=replica, not logical; the next deployment will be online/,
    );
    // What logical replication leaves out: the offline fill's dump carries it.
    sql(
      legacyDb,
      `CREATE TABLE ranks (player int, points int); INSERT INTO ranks SELECT g, g * 7 % 100 FROM generate_series(1, 200) g;
       CREATE MATERIALIZED VIEW top_ranks AS SELECT player, points FROM ranks WHERE points > 90;
       CREATE UNLOGGED TABLE session_cache (token text); INSERT INTO session_cache VALUES ('tok-1'), ('tok-2');
       SELECT lo_from_bytea(4242, 'map of the universe');`,
    );
    const r = await deploy(n);
    assert.is(r.code, 0, r.stderr);
    assert.is(
      sql(n.container, 'SELECT count(*) FROM top_ranks'),
      sql(n.container, 'SELECT count(*) FROM ranks WHERE points > 90'),
    );
    assert.is(sql(n.container, "SELECT convert_from(lo_get(4242), 'UTF8')"), 'map of the universe');
    assert.is(sql(n.container, 'SELECT count(*) FROM session_cache'), '2');
    // The slot it made has wal_level=logical and a socket volume, but the objects still need the offline fill.
    const kept = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
    assert.is(kept.code, 0, kept.stderr);
    assert.match(
      kept.stdout,
      /Fill: offline \(freeze, fresh dump, restore\): the live database holds 1 large object, 1 populated materialized view, 1 unlogged table, which logical replication does not copy/,
    );
    // Without them, the next deployment is online.
    sql(n.container, 'DROP MATERIALIZED VIEW top_ranks; DROP TABLE session_cache; SELECT lo_unlink(4242);');
    const next = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
    assert.match(next.stdout, /Fill: online/);
    const forced = await runTool('deploy-to-qnap', ['--local', '--dry-run', '--offline', ...n.deployArgs], n.env);
    assert.match(forced.stdout, /Fill: offline \(freeze, fresh dump, restore\): --offline/);
  },
);

online.run();
