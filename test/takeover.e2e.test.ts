// Taking over a NAS that ran the old shell scripts, end to end over SSH on loopback: a stack the
// old way (`docker-compose up -d` in the NAS folder), the old cron line, the old scripts, the old
// backups (`_unavailable.sql` with their trailer lines, and the plain `.sql` form). A deploy from
// the workstation replaces the cron line, moves the scripts aside, never proves itself with an
// old backup and keeps them all; they are listed as old script backups and one restores with
// --no-verify only. setup-backup-cron --uninstall puts the line and the scripts back.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, waitFor } from './helpers/cli.ts';
import { startSshd, type TestSshd } from './helpers/sshd.ts';
import { makeTestNas, sqlIn, type TestNas } from './helpers/stack.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

let sshd: TestSshd | undefined;
let nas: TestNas | undefined;
let workstation = '';
let oldLine = '';
const oldScripts = [
  'backup-database.sh',
  'deploy-to-qnap-simple.sh',
  'deploy-to-qnap.sh',
  'restore-database.sh',
  'setup-backup-cron.sh',
];
const hashed = 'planetarion_backup_20261129_180000_unavailable.sql';
const plain = 'planetarion_backup_20261129_100000.sql';

function deployEnv(): Record<string, string> {
  return {
    QNAP_SSH_KEY: sshd!.keyFile,
    QNAP_SSH_PORT: String(sshd!.port),
    QNAP_SSH_KNOWN_HOSTS: sshd!.knownHosts,
    QNAP_SSH_TIMEOUT: '5',
  };
}

/** What the old backup-database.sh wrote: pg_dump's plain SQL, then its two trailer lines. */
function oldScriptBackup(container: string, name: string): void {
  const dump = execFileSync('docker', ['exec', container, 'pg_dump', '-U', 'planetarion_user', 'planetarion'], {
    maxBuffer: 1 << 28,
  });
  writeFileSync(
    join(nas!.dir, 'backups', name),
    Buffer.concat([
      dump,
      Buffer.from(`\n-- GAME_STATE_HASH: unavailable\n-- BACKUP_TIMESTAMP: ${name.slice(19, 34)}\n`),
    ]),
    { mode: 0o644 },
  );
}

const takeover = suite('deploy-to-qnap takes over a NAS that ran the old scripts');

takeover('setup: the old stack, cron line, scripts and backups on the NAS; sshd; the workstation', async () => {
  nas = makeTestNas('real');
  const n = nas;
  execFileSync('docker-compose', ['-p', n.project, '-f', join(n.dir, 'docker-compose.qnap.yml'), 'up', '-d'], {
    stdio: 'ignore',
    cwd: n.dir,
  });
  const legacyDb = `${n.project}_db_1`;
  await waitFor(
    'the old stack',
    () =>
      execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', `${n.project}_app_1`])
        .toString()
        .trim() === 'healthy',
    300_000,
    500,
  );
  execFileSync('mkdir', ['-p', join(n.dir, 'backups'), join(n.dir, 'logs')]);
  sqlIn(legacyDb, "CREATE TABLE takeover_marker (v text); INSERT INTO takeover_marker VALUES ('from the old script')");
  oldScriptBackup(legacyDb, plain);
  oldScriptBackup(legacyDb, hashed);
  sqlIn(legacyDb, 'DROP TABLE takeover_marker');
  for (const name of oldScripts)
    writeFileSync(join(n.dir, name), `#!/bin/sh\necho "${name} ran" >> "${n.dir}/old-ran"\n`, { mode: 0o755 });
  oldLine = `0 2,10,18 * * * ${n.dir}/backup-database.sh`;
  writeFileSync(n.qnap.crontab, `${readFileSync(n.qnap.crontab, 'utf8')}${oldLine}\n`);
  execFileSync('crontab', [n.qnap.crontab], { env: n.env });
  sshd = await startSshd({
    env: { PATH: `${n.qnap.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
  });
  workstation = makeTempDir('planetarion-ws-');
  writeFileSync(join(workstation, 'docker-compose.qnap.yml'), readFileSync(join(n.dir, 'docker-compose.qnap.yml')));
  writeFileSync(join(workstation, 'planetarion.env'), `PLANETARION_DB_CONTAINER=${n.container}\n`);
  writeFileSync(
    join(workstation, '.qnap-deploy.env'),
    `QNAP_IP=127.0.0.1\nQNAP_USER=root\nQNAP_PROJECT_DIR=${n.dir}\n`,
  );
});

takeover(
  'the deploy: A-B over the old stack, proven by its fresh backup (never an old one); the old cron line replaced by one managed line, the scripts moved aside, the old backups kept',
  async () => {
    assert.ok(sshd && nas, 'setup failed');
    const n = nas;
    const r = await runTool('deploy-to-qnap', n.deployArgs, deployEnv(), { cwd: workstation });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /Deployment A-B succeeded/);
    assert.match(r.stderr, /restored planetarion_backup_\d{8}_\d{6}\.sql\.gz/);
    assert.not.match(
      r.stderr,
      /Restore attempt \d+: planetarion_backup_\d{8}_\d{6}(_unavailable)?\.sql /,
      'no old backup was tried',
    );
    const crontab = readFileSync(n.qnap.crontab, 'utf8');
    assert.ok(crontab.includes(`\n# planetarion-backup:old-script-line ${oldLine}\n`), crontab);
    assert.equal(
      crontab
        .split('\n')
        .filter((l) => /^[^#].*backup-database/.test(l))
        .map((l) => l.endsWith('# planetarion-backup:backup')),
      [true],
      'one active backup line, the managed one',
    );
    assert.is(execFileSync('crontab', ['-l'], { env: n.env }).toString(), crontab, 'the running cron holds the same');
    const log = readFileSync(join(n.dir, 'logs/deploy.log'), 'utf8');
    assert.match(log, `Took over the old scripts' cron line`);
    assert.match(log, `Moved the old scripts to ${n.dir}/old-scripts/`);
    assert.equal(readdirSync(join(n.dir, 'old-scripts')).sort(), oldScripts);
    for (const name of oldScripts) assert.not.ok(existsSync(join(n.dir, name)), name);
    for (const name of [hashed, plain]) assert.ok(existsSync(join(n.dir, 'backups', name)), `${name} kept`);
  },
);

takeover('--status lists the old backups as old script backups that carry no proof', async () => {
  assert.ok(nas, 'setup failed');
  const r = await runTool('backup-database', ['--status'], nas.env);
  assert.is(r.code, 0, r.stderr);
  for (const name of [hashed, plain]) {
    assert.match(
      r.stdout,
      new RegExp(
        `^  ${name.replace(/\./g, '\\.')} .* old script backup: no checksum, no fingerprint, .*; it carries no proof, restore it only with --no-verify$`,
        'm',
      ),
    );
  }
  assert.match(r.stdout, /its game-state hash unavailable/);
  const json = JSON.parse((await runTool('backup-database', ['--status', '--json'], nas.env)).stdout);
  const old = json.backups
    .filter((b: { origin: string }) => b.origin === 'old-script')
    .map((b: { file: string }) => b.file);
  assert.equal(old, [hashed, plain]);
});

takeover(
  'restore-database of an old backup: refused without --no-verify (exit 2, the database untouched); restored with it, saying so',
  async () => {
    assert.ok(nas, 'setup failed');
    const n = nas;
    const refused = await runTool('restore-database', ['--yes', hashed], n.env);
    assert.is(refused.code, 2, refused.stderr);
    assert.match(
      refused.stderr,
      `Error: ${hashed} is an old script backup: no checksum, no fingerprint, its game-state hash unavailable; it carries no proof\n`,
    );
    assert.match(refused.stderr, /--no-verify/);
    assert.is(sqlIn(n.container, "SELECT to_regclass('takeover_marker') IS NULL"), 't');
    const r = await runTool('restore-database', ['--yes', '--no-verify', hashed], n.env);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, `${hashed} is an old script backup: restoring it unproven (--no-verify)`);
    assert.match(
      r.stderr,
      `Restore completed: '${process.env.PLANETARION_DB_NAME ?? 'planetarion'}' now holds ${hashed}`,
    );
    assert.is(sqlIn(n.container, 'SELECT v FROM takeover_marker'), 'from the old script');
  },
);

takeover('setup-backup-cron --uninstall puts the old line and the old scripts back', async () => {
  assert.ok(nas, 'setup failed');
  const n = nas;
  const r = await runTool('setup-backup-cron', ['--uninstall', ...n.deployArgs], n.env);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, `Put back the old scripts' cron line:\n  ${oldLine}\n`);
  assert.ok(readFileSync(n.qnap.crontab, 'utf8').split('\n').includes(oldLine));
  assert.not.match(readFileSync(n.qnap.crontab, 'utf8'), /planetarion-backup:/);
  for (const name of oldScripts) assert.ok(existsSync(join(n.dir, name)), `${name} is back`);
  assert.not.ok(existsSync(join(n.dir, 'old-scripts')));
});

takeover.after(async () => {
  await sshd?.stop();
  nas?.cleanup();
  if (workstation) removeTempDir(workstation);
});
takeover.run();
