// setup-backup-cron end to end: the built executable against a fake QNAP tree (--root, with a
// recording crond.sh and a recording `crontab` first on PATH), and against Debian's real cron
// daemon in generic mode, where the installed line must really fire and make a backup.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { distBin, runTool, waitFor, type ToolResult } from './helpers/cli.ts';
import { removeDb, scratchName, seedPlanetarion, startDb } from './helpers/db.ts';
import { makeFakeQnapRoot } from './helpers/fake-qnap.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const db = scratchName('pb-cron');
const made: string[] = [];
const immutable: string[] = [];
let ready = false;

/** QNAP's own jobs plus what people add by hand: comments, blank lines, tabs, trailing spaces, the old script's line. */
const qnapCrontabText = [
  '# m h dom m dow cmd',
  '0 4 * * * /etc/init.d/ImRd.sh bgThGen',
  '0 3 * * * /sbin/hwclock -s',
  '',
  '  ',
  '0-59/15\t*\t* * *\t/etc/init.d/nss2_dusg.sh append   ',
  '   30 7 * * * /sbin/qpkg_cli --check_license 0 > /dev/null 2>/dev/null',
  '# the old backup, kept for now: backup-database # planetarion-backup:backup (not ours)',
  '0 2,10,18 * * * /share/CACHEDEV1_DATA/planetarion/backup-database.sh >> /share/CACHEDEV1_DATA/planetarion/logs/backup.log 2>&1',
  '10 15 * * * /usr/bin/power_clean -c 2>/dev/null',
  '',
].join('\n');
const oldScriptLine =
  '0 2,10,18 * * * /share/CACHEDEV1_DATA/planetarion/backup-database.sh >> /share/CACHEDEV1_DATA/planetarion/logs/backup.log 2>&1';
/** The same crontab once the managed line took over the old script's: that line commented out behind the marker, where it stood. */
const qnapTakenOver = qnapCrontabText.replace(
  `\n${oldScriptLine}\n`,
  `\n# planetarion-backup:old-script-line ${oldScriptLine}\n`,
);
/** The old system's scripts, as they lie in the NAS folder. */
const oldScripts = ['backup-database.sh', 'deploy-to-qnap.sh', 'restore-database.sh', 'setup-backup-cron.sh'];

interface FakeQnap {
  /** Stands for / (--root). */
  root: string;
  /** PLANETARION_DIR: a real folder with the executables linked in. */
  nas: string;
  /** Folder put first on PATH: the recording `crontab`. */
  bin: string;
  crontab: string;
  backupCopy: string;
  /** Lines appended by the fake crontab and crond.sh, in call order. */
  calls(): string[];
  env(extra?: Record<string, string>): Record<string, string>;
}

/** A NAS folder with backup-database and restore-database linked to the built ones (the launcher resolves links). */
function nasFolder(): string {
  const nas = makeTempDir('planetarion-nas-');
  made.push(nas);
  symlinkSync(join(distBin, 'backup-database'), join(nas, 'backup-database'));
  symlinkSync(join(distBin, 'restore-database'), join(nas, 'restore-database'));
  return nas;
}

function fakeQnap(): FakeQnap {
  const tree = makeFakeQnapRoot(qnapCrontabText);
  made.push(tree.base);
  const fake: FakeQnap = {
    root: tree.root,
    nas: nasFolder(),
    bin: tree.bin,
    crontab: tree.crontab,
    backupCopy: `${tree.crontab}.planetarion-backup.bak`,
    calls: tree.calls,
    env: (extra = {}) => ({
      PATH: `${tree.bin}:${process.env.PATH}`,
      PLANETARION_DIR: fake.nas,
      PLANETARION_DB_CONTAINER: db,
      ...extra,
    }),
  };
  return fake;
}

const docker = execFileSync('sh', ['-c', 'command -v docker']).toString().trim();
/** The line setup-backup-cron must write for this NAS folder (docker is found on cron's PATH here, so no DOCKER=). */
function expectedLine(nas: string, job: 'backup' | 'drill', schedule: string, container = db): string {
  const command = job === 'backup' ? `${nas}/backup-database` : `${nas}/restore-database --test latest`;
  return `${schedule} PLANETARION_DIR=${nas} PLANETARION_DB_CONTAINER=${container} ${command} >> ${nas}/logs/backup.log 2>&1 # planetarion-backup:${job}`;
}
const read = (path: string) => readFileSync(path, 'utf8');
const backupsIn = (nas: string) =>
  existsSync(join(nas, 'backups'))
    ? readdirSync(join(nas, 'backups')).filter((f) => /^planetarion_backup_\d{8}_\d{6}\.sql\.gz$/.test(f))
    : [];
const ok = (r: ToolResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

const qnap = suite('setup-backup-cron on a fake QNAP tree (--root)');
let tree: FakeQnap;

qnap('setup: a seeded database and a fake QNAP tree', async () => {
  await startDb(db);
  await seedPlanetarion(db, { scale: 0.2 });
  assert.ok(docker, 'docker is on PATH');
  tree = fakeQnap();
  ready = true;
});

qnap(
  'install: both lines appended, the old script line taken over, other lines byte for byte, previous copy kept, crontab then crond.sh restart, self test passed',
  async () => {
    assert.ok(ready, 'setup failed');
    for (const name of oldScripts) writeFileSync(join(tree.nas, name), `#!/bin/sh\n# ${name}\n`, { mode: 0o755 });
    const r = await runTool('setup-backup-cron', ['--root', tree.root, '--json'], tree.env());
    assert.is(r.code, 0, ok(r));
    const backup = expectedLine(tree.nas, 'backup', '0 2,10,18 * * *');
    const drill = expectedLine(tree.nas, 'drill', '0 4 * * 0');
    assert.fixture(read(tree.crontab), `${qnapTakenOver}${backup}\n${drill}\n`);
    assert.fixture(read(tree.backupCopy), qnapCrontabText);
    assert.is(statSync(tree.crontab).mode & 0o777, 0o644, 'the mode is kept');
    assert.equal(tree.calls(), ['crontab -l', `crontab ${tree.crontab}`, 'crond.sh restart', 'crontab -l']);
    const summary = JSON.parse(r.stdout);
    assert.is(summary.mode, 'qnap');
    assert.is(summary.changed, true);
    assert.equal(summary.lines, [
      { job: 'backup', line: backup },
      { job: 'drill', line: drill },
    ]);
    assert.is(summary.selfTest.ok, true, summary.selfTest.output);
    assert.match(summary.selfTest.output, /Dry run: all checks passed/);
    assert.is(summary.nextRuns.backup.length, 3);
    assert.is(summary.nextRuns.drill.length, 3);
    for (const iso of summary.nextRuns.drill) assert.is(new Date(iso).getDay(), 0, 'drills on Sundays');
    assert.equal(summary.warnings, [], 'the old script line is replaced, not warned about');
    assert.equal(summary.oldScripts, {
      lines: [oldScriptLine],
      scripts: oldScripts,
      folder: join(tree.nas, 'old-scripts'),
    });
    assert.match(
      r.stderr,
      `Took over the old scripts' cron line (kept commented out in ${tree.crontab} (QNAP); --uninstall puts it back): ${oldScriptLine}\n`,
    );
    assert.match(
      r.stderr,
      `Moved the old scripts to ${tree.nas}/old-scripts/ (--uninstall moves them back): ${oldScripts.join(', ')}\n`,
    );
    assert.equal(readdirSync(join(tree.nas, 'old-scripts')).sort(), oldScripts);
    assert.is(statSync(join(tree.nas, 'old-scripts')).mode & 0o777, 0o700);
    for (const name of oldScripts) assert.not.ok(existsSync(join(tree.nas, name)), `${name} moved`);
    assert.ok(existsSync(join(tree.nas, 'logs')), 'the log folder cron appends to exists');
    assert.is(
      readdirSync(join(tree.root, 'etc/config')).sort().join(' '),
      'crontab crontab.planetarion-backup.bak',
      'no temp file left',
    );
  },
);

qnap('the human report: the lines, the next three runs of each in local time, the self test', async () => {
  assert.ok(ready, 'setup failed');
  const r = await runTool('setup-backup-cron', ['--root', tree.root], tree.env());
  assert.is(r.code, 0, ok(r));
  assert.match(r.stdout, /^Already installed in .*etc\/config\/crontab:\n {2}backup: 0 2,10,18 /);
  assert.match(
    r.stdout,
    /^Next backups \(.+\): (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{4}-\d\d-\d\d (02|10|18):00:00, \w{3} [\d-]+ (02|10|18):00:00, \w{3} [\d-]+ (02|10|18):00:00$/m,
  );
  assert.match(
    r.stdout,
    /^Next restore drills \(.+\): Sun [\d-]+ 04:00:00, Sun [\d-]+ 04:00:00, Sun [\d-]+ 04:00:00$/m,
  );
  assert.match(r.stdout, /^Self test passed/m);
  assert.not.match(r.stderr, /Warning/, 'nothing left to warn about: the old line is taken over');
});

qnap('re-running with the same settings rewrites and reloads nothing, duplicates nothing', async () => {
  assert.ok(ready, 'setup failed');
  const before = read(tree.crontab);
  const calls = tree.calls().length;
  const r = await runTool('setup-backup-cron', ['--root', tree.root, '--skip-test', '--json'], tree.env());
  assert.is(r.code, 0, ok(r));
  assert.is(JSON.parse(r.stdout).changed, false);
  assert.is(read(tree.crontab), before);
  assert.fixture(
    read(tree.backupCopy),
    qnapCrontabText,
    'the copy still holds the file as it was before we touched it',
  );
  assert.equal(tree.calls().slice(calls), ['crontab -l', 'crontab -l']);
});

qnap('--dry-run shows the change as a diff and changes nothing', async () => {
  assert.ok(ready, 'setup failed');
  const before = read(tree.crontab);
  const calls = tree.calls().length;
  const r = await runTool(
    'setup-backup-cron',
    ['--root', tree.root, '--schedule', '15 3 * * *', '--dry-run', '--skip-test'],
    tree.env(),
  );
  assert.is(r.code, 0, ok(r));
  assert.match(r.stdout, /^Dry run: .* would change like this \(nothing was written\):$/m);
  assert.match(
    r.stdout,
    `\n-${expectedLine(tree.nas, 'backup', '0 2,10,18 * * *')}\n+${expectedLine(tree.nas, 'backup', '15 3 * * *')}\n`,
  );
  assert.not.match(r.stdout, /^[-+]0 4 \* \* 0/m);
  assert.is(read(tree.crontab), before);
  assert.equal(tree.calls().slice(calls), ['crontab -l'], 'only read (for an old line only the running cron holds)');
});

qnap('re-install with a new schedule: the line is replaced where it stands, the rest byte for byte', async () => {
  assert.ok(ready, 'setup failed');
  const previous = read(tree.crontab);
  const calls = tree.calls().length;
  const r = await runTool(
    'setup-backup-cron',
    ['--root', tree.root, '--skip-test', '--json'],
    tree.env({ PLANETARION_SCHEDULE: '15 3 * * *' }),
  );
  assert.is(r.code, 0, ok(r));
  assert.fixture(
    read(tree.crontab),
    `${qnapTakenOver}${expectedLine(tree.nas, 'backup', '15 3 * * *')}\n${expectedLine(tree.nas, 'drill', '0 4 * * 0')}\n`,
  );
  assert.is(read(tree.backupCopy), previous);
  assert.equal(tree.calls().slice(calls), ['crontab -l', `crontab ${tree.crontab}`, 'crond.sh restart', 'crontab -l']);
  assert.is(JSON.parse(r.stdout).selfTest, undefined, '--skip-test');
});

qnap("the installed line works in cron's bare environment: a real backup, then --status shows it", async () => {
  assert.ok(ready, 'setup failed');
  const line = read(tree.crontab)
    .split('\n')
    .find((l) => l.endsWith('# planetarion-backup:backup'))!;
  const command = line.replace(/^(\S+\s+){5}/, '');
  const run = spawnSync('env', ['-i', 'PATH=/usr/bin:/bin', 'HOME=/root', 'SHELL=/bin/sh', '/bin/sh', '-c', command], {
    encoding: 'utf8',
  });
  assert.is(run.status, 0, run.stderr);
  assert.is(run.stdout + run.stderr, '', 'everything went to the log');
  assert.is(backupsIn(tree.nas).length, 1);
  assert.match(read(join(tree.nas, 'logs/backup.log')), /INFO - Backup completed successfully/);
  const r = await runTool('setup-backup-cron', ['--root', tree.root, '--status'], tree.env());
  assert.is(r.code, 0, ok(r));
  assert.match(r.stdout, `backup: installed\n    ${line}\n`);
  assert.match(r.stdout, /^drill: installed$/m);
  assert.match(r.stdout, /^Next backups \(.+\): \w{3} [\d-]+ 03:15:00, /m);
  assert.match(
    r.stdout,
    new RegExp(
      `^Last backup: succeeded at [\\d-]+ [\\d:]+: ${backupsIn(tree.nas)[0]!.replace(/\./g, '\\.')} \\(\\d+ bytes\\)$`,
      'm',
    ),
  );
  const json = JSON.parse(
    (await runTool('setup-backup-cron', ['--root', tree.root, '--status', '--json'], tree.env())).stdout,
  );
  assert.is(json.status.lastRun.ok, true);
  assert.equal(
    json.lines.map((l: { job: string }) => l.job),
    ['backup', 'drill'],
  );
});

qnap(
  'encrypted backups: the recipients go into the backup line (a shell-only setting would leave cron unencrypted) and no drill line is installed',
  async () => {
    assert.ok(ready, 'setup failed');
    const recipient = execFileSync('sh', ['-c', 'age-keygen 2>/dev/null | grep -o "age1[a-z0-9]*"']).toString().trim();
    const fresh = fakeQnap();
    const r = await runTool(
      'setup-backup-cron',
      ['--root', fresh.root, '--skip-test', '--json'],
      fresh.env({ PLANETARION_AGE_RECIPIENTS: recipient }),
    );
    assert.is(r.code, 0, ok(r));
    assert.match(r.stderr, /No restore-drill line: backups are encrypted/);
    const lines = JSON.parse(r.stdout).lines as Array<{ job: string; line: string }>;
    assert.equal(
      lines.map((l) => l.job),
      ['backup'],
    );
    assert.match(lines[0]!.line, new RegExp(`PLANETARION_AGE_RECIPIENTS=${recipient} `));
    assert.not.match(read(fresh.crontab), /planetarion-backup:drill/);
  },
);

qnap('--no-drill removes only the drill line', async () => {
  assert.ok(ready, 'setup failed');
  const r = await runTool(
    'setup-backup-cron',
    ['--root', tree.root, '--no-drill', '--skip-test'],
    tree.env({ PLANETARION_SCHEDULE: '15 3 * * *' }),
  );
  assert.is(r.code, 0, ok(r));
  assert.fixture(read(tree.crontab), `${qnapTakenOver}${expectedLine(tree.nas, 'backup', '15 3 * * *')}\n`);
});

qnap(
  '--uninstall removes only the managed lines and undoes the takeover: the file is the original again, byte for byte, the old scripts back',
  async () => {
    assert.ok(ready, 'setup failed');
    const previous = read(tree.crontab);
    const calls = tree.calls().length;
    const r = await runTool('setup-backup-cron', ['--root', tree.root, '--uninstall'], tree.env());
    assert.is(r.code, 0, ok(r));
    assert.match(r.stdout, /^Removed 1 managed line from /);
    assert.match(
      r.stdout,
      `\nPut back the old scripts' cron line:\n  ${oldScriptLine}\nMoved the old scripts back from ${tree.nas}/old-scripts/: ${oldScripts.join(', ')}\n`,
    );
    assert.fixture(read(tree.crontab), qnapCrontabText);
    for (const name of oldScripts) assert.ok(existsSync(join(tree.nas, name)), `${name} is back`);
    assert.not.ok(existsSync(join(tree.nas, 'old-scripts')), 'the emptied folder is gone');
    assert.is(read(tree.backupCopy), previous);
    assert.equal(tree.calls().slice(calls), [`crontab ${tree.crontab}`, 'crond.sh restart', 'crontab -l']);
    const again = await runTool('setup-backup-cron', ['--root', tree.root, '--uninstall'], tree.env());
    assert.is(again.code, 0, ok(again));
    assert.match(again.stdout, /nothing removed/);
    const status = await runTool('setup-backup-cron', ['--root', tree.root, '--status'], tree.env());
    assert.match(status.stdout, /^backup: not installed\ndrill: not installed$/m);
  },
);

qnap(
  'an old line only the running cron holds (the old setup loaded it with crontab -): replaced, recorded in the file, put back there by --uninstall',
  async () => {
    assert.ok(ready, 'setup failed');
    const t = fakeQnap();
    const file = '0 3 * * * /sbin/hwclock -s\n';
    writeFileSync(t.crontab, file);
    execFileSync('crontab', ['-'], { input: `${file}${oldScriptLine}\n`, env: t.env() });
    const r = await runTool('setup-backup-cron', ['--root', t.root, '--skip-test', '--no-drill', '--json'], t.env());
    assert.is(r.code, 0, ok(r));
    const installed = `${file}# planetarion-backup:old-script-line ${oldScriptLine}\n${expectedLine(t.nas, 'backup', '0 2,10,18 * * *')}\n`;
    assert.fixture(read(t.crontab), installed);
    assert.is(
      execFileSync('crontab', ['-l'], { env: t.env() }).toString(),
      installed,
      'the running cron no longer runs the old line',
    );
    assert.equal(JSON.parse(r.stdout).oldScripts.lines, [oldScriptLine]);
    const again = await runTool(
      'setup-backup-cron',
      ['--root', t.root, '--skip-test', '--no-drill', '--json'],
      t.env(),
    );
    assert.is(JSON.parse(again.stdout).changed, false, 'recorded once');
    const removed = await runTool('setup-backup-cron', ['--root', t.root, '--uninstall'], t.env());
    assert.is(removed.code, 0, ok(removed));
    assert.fixture(read(t.crontab), `${file}${oldScriptLine}\n`);
  },
);

/** Runs setup-backup-cron on a fresh tree and checks that nothing at all was written. */
async function refused(
  args: string[],
  env: Record<string, string>,
  message: RegExp | string,
  prepare?: (t: FakeQnap) => void,
): Promise<void> {
  const t = fakeQnap();
  prepare?.(t);
  const r = await runTool('setup-backup-cron', ['--root', t.root, ...args], t.env(env));
  assert.is(r.code, 2, ok(r));
  assert.match(r.stderr, message);
  assert.match(r.stderr, /^Error: /);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
  assert.is(r.stdout, '');
  assert.fixture(read(t.crontab), qnapCrontabText);
  assert.not.ok(existsSync(t.backupCopy), 'no copy written');
  assert.equal(t.calls(), []);
  assert.not.ok(existsSync(join(t.nas, 'logs')), 'no log folder made');
}

const badInput: Array<{
  name: string;
  args: string[];
  env?: Record<string, string>;
  message: RegExp;
  prepare?: (t: FakeQnap) => void;
}> = [
  {
    name: "--schedule '61 * * * *'",
    args: ['--schedule', '61 * * * *'],
    message: /invalid --schedule '61 \* \* \* \*': .*minute/,
  },
  {
    name: "--schedule 'every day'",
    args: ['--schedule', 'every day'],
    message: /invalid --schedule 'every day': a schedule has exactly 5 fields/,
  },
  {
    name: 'PLANETARION_SCHEDULE with 6 fields',
    args: [],
    env: { PLANETARION_SCHEDULE: '0 0 2 * * *' },
    message: /invalid PLANETARION_SCHEDULE/,
  },
  {
    name: "--drill-schedule '0 4 * * 9'",
    args: ['--drill-schedule', '0 4 * * 9'],
    message: /invalid --drill-schedule '0 4 \* \* 9'/,
  },
  {
    name: 'a missing binary',
    args: ['--binary', '/nonexistent/backup-database'],
    message: /backup executable '\/nonexistent\/backup-database' does not exist/,
  },
  {
    name: 'a missing default binary (<dir>/backup-database)',
    args: [],
    message: /backup executable '.*\/backup-database' does not exist/,
    prepare: (t) => execFileSync('rm', [join(t.nas, 'backup-database')]),
  },
  {
    name: 'a non-executable binary',
    args: [],
    message: /backup executable '.*\/backup-database' is not executable\nMake it executable: chmod 755 /,
    prepare: (t) => {
      execFileSync('rm', [join(t.nas, 'backup-database')]);
      writeFileSync(join(t.nas, 'backup-database'), '#!/bin/sh\n', { mode: 0o644 });
    },
  },
  {
    name: 'no restore-database beside the binary for the drill',
    args: [],
    message: /restore executable \(for the weekly drill\) '.*\/restore-database' does not exist\n.*--no-drill/,
    prepare: (t) => execFileSync('rm', [join(t.nas, 'restore-database')]),
  },
  {
    name: 'a base dir that does not exist',
    args: [],
    env: { PLANETARION_DIR: '/nonexistent/planetarion' },
    message: /PLANETARION_DIR '\/nonexistent\/planetarion' does not exist/,
  },
  {
    name: 'a --docker that is not there',
    args: ['--docker', '/nonexistent/docker'],
    message: /DOCKER '\/nonexistent\/docker' is not an executable file/,
  },
  {
    name: 'a dir with % (cron would cut the line there)',
    args: [],
    message: /cannot go into a crontab line/,
    prepare: (t) => {
      mkdirSync(`${t.nas}/100%`);
      symlinkSync(join(distBin, 'backup-database'), `${t.nas}/100%/backup-database`);
      symlinkSync(join(distBin, 'restore-database'), `${t.nas}/100%/restore-database`);
      t.nas = `${t.nas}/100%`;
    },
  },
  {
    name: '--uninstall with --status',
    args: ['--uninstall', '--status'],
    message: /--uninstall and --status cannot be combined/,
  },
];
for (const c of badInput) {
  qnap(`refused with exit 2, nothing written: ${c.name}`, async () => {
    assert.ok(ready, 'setup failed');
    await refused(c.args, c.env ?? {}, c.message, c.prepare);
  });
}

qnap(
  'refused with exit 2: --root without etc/config/crontab (the user crontab cannot be redirected); no crontab at all',
  async () => {
    assert.ok(ready, 'setup failed');
    const t = fakeQnap();
    execFileSync('rm', [t.crontab]);
    const r = await runTool('setup-backup-cron', ['--root', t.root], t.env());
    assert.is(r.code, 2, ok(r));
    assert.match(r.stderr, /^Error: --root '.*' holds no etc\/config\/crontab$/m);
    assert.equal(t.calls(), []);
    // No --root and no crontab on PATH (this machine has no /etc/config/crontab): only what the launcher needs, readlink.
    assert.not.ok(existsSync('/etc/config/crontab'));
    const bare = join(t.bin, '..', 'bare');
    mkdirSync(bare);
    symlinkSync(execFileSync('sh', ['-c', 'command -v readlink']).toString().trim(), join(bare, 'readlink'));
    const r2 = await runTool('setup-backup-cron', [], t.env({ PATH: bare }));
    assert.is(r2.code, 2, ok(r2));
    assert.match(r2.stderr, /no crontab found: neither QNAP's \/etc\/config\/crontab nor a 'crontab' command on PATH/);
    assert.not.ok(existsSync(join(t.nas, 'logs')));
  },
);

qnap(
  'a crontab that cannot be written (immutable file, immutable folder): exit 1, the previous crontab intact',
  async () => {
    assert.ok(ready, 'setup failed');
    const file = fakeQnap();
    execFileSync('chattr', ['+i', file.crontab]);
    immutable.push(file.crontab);
    const r = await runTool('setup-backup-cron', ['--root', file.root, '--skip-test'], file.env());
    assert.is(r.code, 1, ok(r));
    assert.match(
      r.stderr,
      /^Error: cannot write .*etc\/config\/crontab: it is immutable or protected \(chattr \+i\?\); the crontab was not changed$/m,
    );
    assert.fixture(read(file.crontab), qnapCrontabText);
    assert.equal(file.calls(), ['crontab -l'], 'only read');
    assert.equal(readdirSync(join(file.root, 'etc/config')), ['crontab']);

    const folder = fakeQnap();
    execFileSync('chattr', ['+i', join(folder.root, 'etc/config')]);
    immutable.push(join(folder.root, 'etc/config'));
    const r2 = await runTool('setup-backup-cron', ['--root', folder.root, '--skip-test'], folder.env());
    assert.is(r2.code, 1, ok(r2));
    assert.match(r2.stderr, /^Error: cannot write .*crontab\.planetarion-backup\.bak: .*the crontab was not changed$/m);
    assert.fixture(read(folder.crontab), qnapCrontabText);
    assert.equal(folder.calls(), ['crontab -l'], 'only read');
  },
);

qnap('a failing self test: exit 1, said clearly, the lines stay installed', async () => {
  assert.ok(ready, 'setup failed');
  const t = fakeQnap();
  const missing = 'pb-cron-no-such-container';
  const r = await runTool('setup-backup-cron', ['--root', t.root], t.env({ PLANETARION_DB_CONTAINER: missing }));
  assert.is(r.code, 1, ok(r));
  assert.match(
    r.stdout,
    /^Self test FAILED \(backup-database --dry-run with cron's environment, exit 1\):\n[\s\S]*Database container 'pb-cron-no-such-container' is not running/m,
  );
  assert.match(
    r.stderr,
    /^Error: the self test \(backup-database --dry-run\) failed with exit 1; the cron lines ARE installed/m,
  );
  assert.fixture(
    read(t.crontab),
    `${qnapTakenOver}${expectedLine(t.nas, 'backup', '0 2,10,18 * * *', missing)}\n${expectedLine(t.nas, 'drill', '0 4 * * 0', missing)}\n`,
  );
});

qnap.after(async () => {
  for (const path of immutable) spawnSync('chattr', ['-i', path]);
});
qnap.run();

// ---------------------------------------------------------------------------------------------

const cron = suite("setup-backup-cron with Debian's cron (generic mode, root's crontab)");
let savedCrontab: string | undefined;
let crontabSaved = false;

/** Root's crontab as it is, or undefined when there is none. */
function rootCrontab(): string | undefined {
  const r = spawnSync('crontab', ['-l'], { encoding: 'utf8' });
  if (r.status === 0) return r.stdout;
  if (/no crontab for/.test(r.stderr)) return undefined;
  throw new Error(`crontab -l failed: ${r.stderr}`);
}

function restoreRootCrontab(): void {
  if (!crontabSaved) return;
  if (savedCrontab === undefined) spawnSync('crontab', ['-r']);
  else spawnSync('crontab', ['-'], { input: savedCrontab });
}

cron('every minute: the job really fires and a real backup appears within 70 s; --status and --uninstall', async () => {
  assert.ok(ready, 'setup failed');
  savedCrontab = rootCrontab();
  crontabSaved = true;
  if (spawnSync('pgrep', ['-x', 'cron']).status !== 0) {
    // Debian's cron daemonizes; the test bed (test/env/setup.sh) installs it.
    const started = spawnSync('cron', [], { encoding: 'utf8' });
    assert.is(started.status, 0, `cron did not start: ${started.stderr}`);
    await waitFor('cron to run', () => spawnSync('pgrep', ['-x', 'cron']).status === 0, 10_000);
  }
  const nas = nasFolder();
  const env = { PLANETARION_DIR: nas, PLANETARION_DB_CONTAINER: db };
  const r = await runTool('setup-backup-cron', ['--schedule', '* * * * *', '--no-drill', '--json'], env);
  assert.is(r.code, 0, ok(r));
  const installedAt = Date.now();
  const summary = JSON.parse(r.stdout);
  assert.is(summary.mode, 'generic');
  assert.is(summary.selfTest.ok, true, summary.selfTest.output);
  const line = expectedLine(nas, 'backup', '* * * * *');
  assert.ok(rootCrontab()!.split('\n').includes(line), 'crontab -l holds the line');
  if (savedCrontab) assert.ok(rootCrontab()!.startsWith(savedCrontab), "root's other lines are kept");

  await waitFor(
    'a backup made by cron',
    () => backupsIn(nas).length > 0 && existsSync(join(nas, 'backups', `${backupsIn(nas)[0]}.sha256`)),
    70_000 - (Date.now() - installedAt),
    250,
  );
  const log = read(join(nas, 'logs/backup.log'));
  assert.match(log, /INFO - Backup completed successfully/);
  const lines = log.split('\n').filter(Boolean);
  assert.ok(
    lines.every((l, i) => l !== lines[i - 1]),
    'each log line once (stderr is the log file under cron)',
  );
  execFileSync('sha256sum', ['-c', `${backupsIn(nas)[0]}.sha256`], { cwd: join(nas, 'backups') });

  const status = await runTool('setup-backup-cron', ['--status'], env);
  assert.is(status.code, 0, ok(status));
  assert.match(
    status.stdout,
    `Crontab: this user's crontab (crontab -l)\nbackup: installed\n    ${line}\ndrill: not installed\n`,
  );
  assert.match(status.stdout, /^Last backup: succeeded at /m);

  const removed = await runTool('setup-backup-cron', ['--uninstall'], env);
  assert.is(removed.code, 0, ok(removed));
  assert.is(rootCrontab() ?? '', savedCrontab ?? '', "root's crontab is as it was");
});

cron.after(async () => {
  restoreRootCrontab();
  await removeDb(db);
  for (const dir of made) removeTempDir(dir);
});
cron.run();
