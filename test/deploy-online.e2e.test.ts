// deploy-to-qnap --local fills the new slot online, by PostgreSQL's logical replication, while the
// game writes: real Compose stacks shaped like the game's (no container_name, driver_opts bind
// data folder, a one-shot migration), a host writer committing a tick every 0.1 s that also
// updates and deletes rows of a table without a key. No tick is lost, the game sees no error,
// and no subscription, publication or replication slot is left on either side, whether the
// deployment switches, is interrupted during the copy, or fails its proof.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, startTool, waitFor, type ToolResult } from './helpers/cli.ts';
import { containersOf, makeTestNas, type TestNas } from './helpers/stack.ts';

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
const sql = (container: string, text: string) =>
  execFileSync(
    'docker',
    [
      'exec',
      '-i',
      container,
      'psql',
      '-X',
      '-q',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      '-U',
      'planetarion_user',
      '-d',
      'planetarion',
    ],
    { input: text, timeout: 120_000 },
  )
    .toString()
    .trim();
const health = (name: string) =>
  execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', name]).toString().trim();
const volumesOf = (prefix: string) =>
  execFileSync('docker', ['volume', 'ls', '-q'])
    .toString()
    .split('\n')
    .filter((v) => v.startsWith(prefix));

/** The game's tables beside app_writes: ticks with a sequence, a keyless table the writer updates and deletes from, and a bigger one to copy. */
const gameSchema = `
  CREATE TABLE ticks (id bigserial PRIMARY KEY, n int NOT NULL UNIQUE, at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE scores (player int NOT NULL, points int NOT NULL);
  INSERT INTO scores SELECT g, 0 FROM generate_series(1, 50) g;
  CREATE TABLE planets (id int PRIMARY KEY, name text NOT NULL, ore bigint NOT NULL);
  INSERT INTO planets SELECT g, 'planet ' || g, g * 7 FROM generate_series(1, 200000) g;
  CREATE SEQUENCE fleet_numbers START 1000;
  SELECT nextval('fleet_numbers') FROM generate_series(1, 5);`;

/**
 * A host-side writer like a cron tick or the game's ticker: each tick is one transaction that
 * inserts a numbered tick, updates a keyless row and deletes and re-inserts another. Prints the
 * numbers that committed, and every error message it got.
 */
function startWriter(container: string): { child: ChildProcess; committed: () => number[]; errors: () => string[] } {
  const tick = `INSERT INTO ticks (n) VALUES ($i); UPDATE scores SET points = points + 1 WHERE player = $i % 50 + 1; DELETE FROM scores WHERE player = 1000 + $i % 7; INSERT INTO scores VALUES (1000 + $i % 7, $i); SELECT nextval('fleet_numbers');`;
  const script = `i=0; while :; do i=$((i+1)); if out=$(docker exec "$1" psql -X -q -1 -v ON_ERROR_STOP=1 -U planetarion_user -d planetarion -c "${tick}" 2>&1 >/dev/null); then echo "ok $i"; else echo "error $i $out" | tr '\\n' ' '; echo; fi; sleep 0.1; done`;
  const child = spawn('sh', ['-c', script, 'sh', container], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const lines = () => out.split('\n').filter(Boolean);
  return {
    child,
    committed: () =>
      lines()
        .filter((l) => l.startsWith('ok '))
        .map((l) => Number(l.slice(3))),
    errors: () => lines().filter((l) => l.startsWith('error ')),
  };
}
const stopWriter = (writer: { child: ChildProcess }) => process.kill(-writer.child.pid!, 'SIGKILL');

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

online.after(cleanAll);

online(
  'the second deployment fills the new slot online while the writer commits: no tick lost, no error, sequences copied, nothing of the replication left',
  async () => {
    const { n, writer } = await liveStack();
    const plan = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
    assert.is(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, /Fill: online, by logical replication/);
    assert.match(plan.stdout, /\d\. replicate: /);
    assert.match(plan.stdout, /\d\. detach: /);
    let r: ToolResult;
    try {
      r = await deploy(n);
    } finally {
      stopWriter(writer);
    }
    assert.is(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.is(result.mode, 'ab');
    assert.match(r.stderr, /Subscription planetarion_deploy_s\d+_\d+: .* copies 'planetarion'/);
    assert.match(r.stderr, /REPLICA IDENTITY FULL for the deployment on the tables without a key: .*public\.scores/);
    assert.match(r.stderr, /Fingerprint proven: [0-9a-f]{64}/);
    assert.match(result.fingerprint, /^[0-9a-f]{64}$/);
    assert.is(result.backupUsed, null);
    assert.ok(result.downtimeMs > 0);
    assert.equal(identityErrors(writer.errors()), [], 'the game got replica identity errors');
    // Every tick that committed is in the new live database.
    const live = new Set(sql(n.container, 'SELECT n FROM ticks').split('\n').map(Number));
    const missing = writer.committed().filter((i) => !live.has(i));
    assert.equal(missing, [], `committed ticks missing from the new live database: ${missing.join(', ')}`);
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
    execFileSync('docker', ['stop', oldDb]);
  },
);

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

/** After an aborted deployment: the live slot as it was, writing, nothing of the replication left. */
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
  assert.is(identityOf(n.container), 'd');
  assert.is(sql(n.container, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'"), 't');
  const committed = writer.committed().length;
  await waitFor('the writer to commit again', () => writer.committed().length > committed + 2, 60_000, 100);
  assert.equal(identityErrors(writer.errors()), [], 'the game got replica identity errors');
}

online(
  'SIGTERM while the tables are being copied: exit 1, subscription, publication and replication slots dropped, the identity put back, the live slot writing',
  async () => {
    const { n, liveSlot, writer } = await liveStack();
    try {
      sql(n.container, holdCopy);
      const before = containersOf(n.project);
      const started = startTool('deploy-to-qnap', deployArgs(n, []), n.env);
      let stderr = '';
      started.child.stderr!.on('data', (d: string) => (stderr += d));
      await waitFor(
        'the copy to start',
        () => /Subscription planetarion_deploy_\S+: .* copies/.test(stderr),
        600_000,
        50,
      );
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
      const r = await deploy(n);
      assert.is(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /the new database's fingerprint differs from the frozen live database's \(table public\.planets\)/,
      );
      assert.not.match(r.stderr, / {4}at /);
      await assertLiveIntact(n, liveSlot, before, writer);
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
  'a live slot without wal_level=logical and a socket volume (deployed by the old scripts) is deployed offline, and the plan says why and that the next one is online',
  async () => {
    const n = makeTestNas('real');
    nases.push(n);
    execFileSync('docker-compose', ['-p', n.project, '-f', `${n.dir}/docker-compose.qnap.yml`, 'up', '-d'], {
      stdio: 'ignore',
    });
    await waitFor('the old-script stack', () => health(`${n.project}_app_1`) === 'healthy', 180_000, 500);
    const plan = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
    assert.is(plan.code, 0, plan.stderr);
    assert.match(
      plan.stdout,
      /Fill: offline \(freeze, fresh dump, restore\): the live database runs with wal_level=replica, not logical; the next deployment will be online/,
    );
    const r = await deploy(n);
    assert.is(r.code, 0, r.stderr);
    // The slot it made has both: the next deployment is online.
    const next = await runTool('deploy-to-qnap', ['--local', '--dry-run', ...n.deployArgs], n.env);
    assert.match(next.stdout, /Fill: online/);
    const forced = await runTool('deploy-to-qnap', ['--local', '--dry-run', '--offline', ...n.deployArgs], n.env);
    assert.match(forced.stdout, /Fill: offline \(freeze, fresh dump, restore\): --offline/);
  },
);

online.run();
