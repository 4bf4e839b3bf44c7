// deploy-to-qnap of a compose file shaped like the game's own (test/fixtures/stack-game): from a
// "workstation" folder over real SSH (sshd on 127.0.0.1) to a "NAS" dir on this machine, with the
// real Docker engine behind both. First over a stack the old scripts started (`up -d --build` in
// the NAS folder), then over its own deployment, then with --build-on-nas. The backend writes a
// tick every 0.1 s naming the code version it sees in its bind-mounted ./src; no tick committed
// before a switch may be lost, and the live slot must keep seeing its own code until the switch.
// The NAS also holds what the old scripts left (their cron line, the scripts, an `_unavailable.sql`
// backup with its trailer lines): the first deploy takes them over, and the old backup restores
// with --no-verify at the end.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { runTool, waitFor } from './helpers/cli.ts';
import { startSshd, type TestSshd } from './helpers/sshd.ts';
import { makeTestNas, sqlIn, type TestNas } from './helpers/stack.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const fixture = join(import.meta.dirname, 'fixtures/stack-game');
let sshd: TestSshd | undefined;
let nas: TestNas | undefined;
let workstation = '';
let oldLine = '';
const oldScripts = ['backup-database.sh', 'deploy-to-qnap.sh', 'restore-database.sh', 'setup-backup-cron.sh'];
const oldBackup = 'planetarion_backup_20261129_180000_unavailable.sql';

interface SlotRecord {
  project: string;
  slotId: string;
  containers: Array<{ service: string; name: string }>;
}
const state = () =>
  JSON.parse(readFileSync(join(nas!.dir, 'deploy/state.json'), 'utf8')) as { live: SlotRecord; previous: SlotRecord };
const nameOf = (slot: SlotRecord, service: string) => slot.containers.find((c) => c.service === service)!.name;
const inspect = (name: string, format: string) =>
  execFileSync('docker', ['inspect', '-f', format, name]).toString().trim();
const health = (name: string) => inspect(name, '{{.State.Health.Status}}');
const srcMount = (name: string) =>
  inspect(name, '{{range .Mounts}}{{if eq .Destination "/app/src"}}{{.Source}}{{end}}{{end}}');
const lines = (text: string) => text.split('\n').filter(Boolean);

function env(): Record<string, string> {
  return {
    QNAP_SSH_KEY: sshd!.keyFile,
    QNAP_SSH_PORT: String(sshd!.port),
    QNAP_SSH_KNOWN_HOSTS: sshd!.knownHosts,
    QNAP_SSH_TIMEOUT: '5',
  };
}
const deploy = (args: string[] = []) =>
  runTool('deploy-to-qnap', [...nas!.deployArgs, ...args], env(), { cwd: workstation });
const setVersion = (folder: string, version: string) => writeFileSync(join(folder, 'src/VERSION'), `${version}\n`);

/**
 * The ticks the outgoing slot's database holds (started again after the switch), checked against
 * the live one: every committed tick is there. Returns the codes the given backend wrote.
 */
async function outgoingTicks(previousDb: string, backend: string): Promise<string[]> {
  execFileSync('docker', ['start', previousDb]);
  try {
    await waitFor('the previous database', () => health(previousDb) === 'healthy', 120_000, 200);
    const before = lines(sqlIn(previousDb, 'SELECT id FROM ticks ORDER BY id'));
    const live = new Set(lines(sqlIn(nas!.container, 'SELECT id FROM ticks')));
    const lost = before.filter((id) => !live.has(id));
    assert.equal(lost, [], `ticks committed before the switch and missing after it: ${lost.join(', ')}`);
    assert.ok(before.length > 0);
    return lines(
      sqlIn(previousDb, `SELECT DISTINCT code FROM ticks WHERE origin = '${inspect(backend, '{{.Config.Hostname}}')}'`),
    );
  } finally {
    execFileSync('docker', ['stop', previousDb]);
  }
}

/** The codes the live backend has written so far (after it wrote a few). */
async function liveCodes(): Promise<string[]> {
  const backend = nameOf(state().live, 'backend');
  const host = inspect(backend, '{{.Config.Hostname}}');
  await waitFor(
    'the new backend to tick',
    () => Number(sqlIn(nas!.container, `SELECT count(*) FROM ticks WHERE origin = '${host}'`)) > 3,
    60_000,
    200,
  );
  return lines(sqlIn(nas!.container, `SELECT DISTINCT code || ' / ' || build FROM ticks WHERE origin = '${host}'`));
}

const game = suite('deploy-to-qnap: the game-shaped stack (build:, ./src bind mount, published ports) over SSH');

game(
  'setup: the NAS runs the stack the old scripts started (up -d --build in its folder); the workstation has newer code',
  async () => {
    nas = makeTestNas('real');
    const yaml = readFileSync(join(fixture, 'docker-compose.qnap.yml'), 'utf8').replaceAll('__SHARE__', nas.share);
    nas.setCompose(() => yaml);
    mkdirSync(join(nas.share, 'postgres_data'));
    // What the old deploy script rsynced to the NAS.
    cpSync(join(fixture, 'src'), join(nas.dir, 'src'), { recursive: true });
    execFileSync('docker-compose', ['-p', nas.project, '-f', 'docker-compose.qnap.yml', 'up', '-d', '--build'], {
      cwd: nas.dir,
      stdio: 'ignore',
    });
    await waitFor('the old-script frontend', () => health(`${nas!.project}_frontend_1`) === 'healthy', 300_000, 500);
    // What the old scripts left: a backup as backup-database.sh wrote it (pg_dump's SQL and its two
    // trailer lines; the game-state hash was always 'unavailable'), the scripts, the cron line.
    const legacyDb = `${nas.project}_db_1`;
    sqlIn(
      legacyDb,
      "CREATE TABLE takeover_marker (v text); INSERT INTO takeover_marker VALUES ('from the old script')",
    );
    const dump = execFileSync('docker', ['exec', legacyDb, 'pg_dump', '-U', 'planetarion_user', 'planetarion'], {
      maxBuffer: 1 << 28,
    });
    sqlIn(legacyDb, 'DROP TABLE takeover_marker');
    mkdirSync(join(nas.dir, 'backups'), { recursive: true });
    writeFileSync(
      join(nas.dir, 'backups', oldBackup),
      Buffer.concat([dump, Buffer.from('\n-- GAME_STATE_HASH: unavailable\n-- BACKUP_TIMESTAMP: 20261129_180000\n')]),
      { mode: 0o644 },
    );
    for (const name of oldScripts) writeFileSync(join(nas.dir, name), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    oldLine = `0 2,10,18 * * * ${nas.dir}/backup-database.sh`;
    writeFileSync(nas.qnap.crontab, `${readFileSync(nas.qnap.crontab, 'utf8')}${oldLine}\n`);
    execFileSync('crontab', [nas.qnap.crontab], { env: nas.env });
    sshd = await startSshd({
      env: { PATH: `${nas.qnap.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
    });
    workstation = makeTempDir('planetarion-ws-');
    writeFileSync(join(workstation, 'docker-compose.qnap.yml'), yaml);
    cpSync(join(fixture, 'src'), join(workstation, 'src'), { recursive: true });
    setVersion(workstation, 'v2');
    // Never synced: version control, installed dependencies, bytecode caches.
    for (const junk of ['.git/HEAD', 'node_modules/left-pad/index.js', 'backend/__pycache__/x.pyc']) {
      mkdirSync(join(workstation, 'src', junk, '..'), { recursive: true });
      writeFileSync(join(workstation, 'src', junk), 'not for the NAS\n');
    }
    writeFileSync(join(workstation, 'planetarion.env'), `PLANETARION_DB_CONTAINER=${nas.container}\n`);
    writeFileSync(
      join(workstation, '.qnap-deploy.env'),
      `QNAP_IP=127.0.0.1\nQNAP_USER=root\nQNAP_PROJECT_DIR=${nas.dir}\n`,
    );
  },
);

game(
  '--dry-run prints what is built, shipped, synced, stopped, restored and switched, and every deviation from the file; changes nothing',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const r = await deploy(['--dry-run']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Plan: sync \.\/src to .*\/deploy\/sync: \d+ changed, 0 removed of \d+ files/);
    assert.match(
      r.stderr,
      new RegExp(
        `Plan: build 'backend' \\(src/backend/Dockerfile, target production, args APP_VERSION NODE_ENV\\) here for linux/amd64 as ${nas.project}-backend:c[0-9a-f]{16}, ship it`,
      ),
    );
    assert.match(r.stderr, /Plan: build 'frontend' /);
    const plan = r.stdout;
    assert.match(plan, new RegExp(`Live slot: ${nas.project} \\(`));
    assert.match(
      plan,
      /Deviation: the 'backend' service builds \(context \.\/src, dockerfile \.\/backend\/Dockerfile, target production\): this slot runs the image \S+-backend:c[0-9a-f]{16} instead/,
    );
    assert.match(
      plan,
      /Deviation: the 'db' service publishes 127\.0\.0\.1:5432:5432: the new database does not .* Docker binds none of them anyway/,
    );
    assert.match(
      plan,
      /Deviation: the 'backend' service publishes 0\.0\.0\.0:5000:5000: kept; its new container starts only after the live writers stop/,
    );
    assert.match(
      plan,
      /Deviation: the 'backend' service bind-mounts \.\/src: this slot mounts its own copy \S+\/deploy\/\S+\/src/,
    );
    assert.match(
      plan,
      /Storage: the 'db' data dir volume 'postgres_data' binds \S+\/postgres_data; this slot binds its own folder/,
    );
    for (const phase of ['stage', 'freeze', 'prove', 'start', 'release', 'switch'])
      assert.match(plan, new RegExp(`^\\d+\\. ${phase}: `, 'm'));
    assert.not.ok(existsSync(join(nas.dir, 'deploy/sync')), 'a dry run synced');
    assert.is(
      execFileSync('docker', ['images', '-q', `${nas.project}-backend`])
        .toString()
        .trim(),
      '',
      'a dry run built',
    );
  },
);

game(
  'first deploy over the old-script stack: images built here and shipped, ./src synced, A-B switch, no tick lost, the old stack kept its code',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const oldBackend = `${nas.project}_backend_1`;
    const r = await deploy();
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Synced \.\/src to \S+: [1-9]\d* changed, 0 removed of \d+ files/);
    assert.match(
      r.stderr,
      /Image of 'backend' .*: \S+-backend:c[0-9a-f]{16} built here; shipped image \S+ \(\d+ bytes\)/,
    );
    assert.match(r.stderr, /Image of 'frontend' .*: \S+-frontend:c[0-9a-f]{16} built here; shipped image/);
    assert.match(r.stderr, /Deployment A-B succeeded/);
    const { live, previous } = state();
    assert.is(previous.project, nas.project);
    // The old stack's code on the NAS was never written; it saw v1 until its writers stopped.
    assert.is(readFileSync(join(nas.dir, 'src/VERSION'), 'utf8'), 'v1\n');
    assert.equal(await outgoingTicks(nameOf(previous, 'db'), nameOf(previous, 'backend')), ['v1']);
    assert.is(srcMount(nameOf(previous, 'backend')), join(nas.dir, 'src'));
    // The new slot runs the shipped images and mounts its own copy of the synced code.
    assert.equal(await liveCodes(), ['v2 / 1.0 production']);
    const backend = nameOf(live, 'backend');
    assert.is(srcMount(backend), `${nas.dir}/deploy/${live.project}/src`);
    assert.match(inspect(backend, '{{.Config.Image}}'), new RegExp(`^${nas.project}-backend:c[0-9a-f]{16}$`));
    const slotFile = parse(readFileSync(join(nas.dir, `deploy/${live.project}.yml`), 'utf8'));
    assert.is(slotFile.services.backend.build, undefined);
    assert.is(slotFile.services.backend.logging.options['max-size'], '10m');
    assert.is(slotFile.services.backend.deploy.resources.limits.memory, '256M');
    assert.is(slotFile.services.db.ports, undefined);
    assert.equal(slotFile.services.backend.ports, ['0.0.0.0:5000:5000']);
    for (const junk of ['.git', 'node_modules', 'backend/__pycache__'])
      assert.not.ok(existsSync(join(nas.dir, 'deploy/sync/src', junk)), junk);
    assert.ok(health(nameOf(live, 'frontend')) === 'healthy');
    assert.is(
      execFileSync('docker', ['inspect', '-f', '{{.State.Status}}', `${oldBackend}-${previous.slotId}`])
        .toString()
        .trim(),
      'exited',
    );
    // The old scripts taken over: one managed cron line runs (the old one kept, commented out), the
    // scripts moved aside, the old backup kept, never tried as the deploy's proof.
    assert.not.match(r.stderr, /Restore attempt \d+: planetarion_backup_20261129_180000_unavailable\.sql/);
    const crontab = readFileSync(nas.qnap.crontab, 'utf8');
    assert.ok(crontab.includes(`\n# planetarion-backup:old-script-line ${oldLine}\n`), crontab);
    assert.equal(
      crontab
        .split('\n')
        .filter((l) => /^[^#].*backup-database/.test(l))
        .map((l) => l.endsWith('# planetarion-backup:backup')),
      [true],
      'one active backup line, the managed one',
    );
    assert.is(execFileSync('crontab', ['-l'], { env: nas.env }).toString(), crontab, 'the running cron holds the same');
    assert.equal(readdirSync(join(nas.dir, 'old-scripts')).sort(), oldScripts);
    for (const name of oldScripts) assert.not.ok(existsSync(join(nas.dir, name)), name);
    assert.ok(existsSync(join(nas.dir, 'backups', oldBackup)));
  },
);

game(
  'second deploy over its own deployment: nothing changed, so nothing is built, shipped or synced; no tick lost',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const r = await deploy();
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Synced \.\/src to \S+: 0 changed, 0 removed of \d+ files/);
    assert.match(r.stderr, /Image of 'backend' .*: \S+ already built here; image \S+ is already on the NAS/);
    assert.match(r.stderr, /Image of 'frontend' .*: \S+ already built here; image \S+ is already on the NAS/);
    assert.not.match(r.stderr, /shipped image/);
    const { live, previous } = state();
    assert.equal(await outgoingTicks(nameOf(previous, 'db'), nameOf(previous, 'backend')), ['v2']);
    assert.equal(await liveCodes(), ['v2 / 1.0 production']);
    assert.is(srcMount(nameOf(live, 'backend')), `${nas.dir}/deploy/${live.project}/src`);
  },
);

game(
  '--build-on-nas with changed code and build args: built on the NAS from the synced context; the live slot saw its own code until the switch',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    setVersion(workstation, 'v3');
    const compose = join(workstation, 'docker-compose.qnap.yml');
    writeFileSync(compose, readFileSync(compose, 'utf8').replace('APP_VERSION: "1.0"', 'APP_VERSION: "1.1"'));
    const outgoing = state().live;
    const r = await deploy(['--build-on-nas']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Synced \.\/src to \S+: 1 changed, 0 removed/);
    assert.match(r.stderr, /Image of 'backend' .*: \S+-backend:c[0-9a-f]{16} built on the NAS/);
    const { live, previous } = state();
    assert.is(previous.project, outgoing.project);
    // The outgoing slot's copy was not touched by the sync: it wrote v2 until it stopped.
    assert.is(readFileSync(`${nas.dir}/deploy/${outgoing.project}/src/VERSION`, 'utf8'), 'v2\n');
    assert.equal(await outgoingTicks(nameOf(previous, 'db'), nameOf(previous, 'backend')), ['v2']);
    assert.equal(await liveCodes(), ['v3 / 1.1 production']);
    assert.is(readFileSync(`${nas.dir}/deploy/${live.project}/src/VERSION`, 'utf8'), 'v3\n');
  },
);

game(
  "a deploy with nothing changed: the slot before the previous one goes with the image only it ran; the images the kept slots run, and the operator's own, stay",
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const before = state();
    const imageOf = (slot: SlotRecord, service: string) => inspect(nameOf(slot, service), '{{.Config.Image}}');
    const older = imageOf(before.previous, 'backend');
    const current = imageOf(before.live, 'backend');
    const frontend = imageOf(before.live, 'frontend');
    const database = imageOf(before.live, 'db');
    assert.is.not(older, current, 'the --build-on-nas deploy built a new backend image');
    const r = await deploy();
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`Removed slot ${before.previous.project} and its volumes`));
    assert.match(r.stderr, new RegExp(`Removed the images no slot runs any more: ${older.replace(/[.]/g, '\\.')}`));
    const exists = (image: string) => {
      try {
        execFileSync('docker', ['image', 'inspect', image], { stdio: 'ignore' });
        return true;
      } catch {
        return false;
      }
    };
    assert.not.ok(exists(older), `${older} is still on the NAS`);
    for (const kept of [current, frontend, database]) assert.ok(exists(kept), `${kept} was removed`);
    assert.equal(await liveCodes(), ['v3 / 1.1 production']);
  },
);

game('the old script backup: listed as one that carries no proof, restored only with --no-verify', async () => {
  assert.ok(nas, 'setup failed');
  const status = await runTool('backup-database', ['--status'], nas.env);
  assert.is(status.code, 0, status.stderr);
  assert.match(
    status.stdout,
    new RegExp(
      `^  ${oldBackup.replace(/\./g, '\\.')} .* old script backup: .*; it carries no proof, restore it only with --no-verify$`,
      'm',
    ),
  );
  const refused = await runTool('restore-database', ['--yes', oldBackup], nas.env);
  assert.is(refused.code, 2, refused.stderr);
  assert.is(sqlIn(nas.container, "SELECT to_regclass('takeover_marker') IS NULL"), 't');
  const r = await runTool('restore-database', ['--yes', '--no-verify', oldBackup], nas.env);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, `${oldBackup} is an old script backup: restoring it unproven (--no-verify)`);
  assert.is(sqlIn(nas.container, 'SELECT v FROM takeover_marker'), 'from the old script');
});

game.after(async () => {
  await sshd?.stop();
  const project = nas?.project;
  nas?.cleanup();
  if (project) {
    const images = execFileSync('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'])
      .toString()
      .split('\n')
      .filter((i) => i.startsWith(project));
    if (images.length) execFileSync('docker', ['rmi', '-f', ...images], { stdio: 'ignore' });
  }
  if (workstation) removeTempDir(workstation);
});
game.run();
