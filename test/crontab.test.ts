// The crontab planning (lib/cron/crontab.ts) and the parts of lib/cron/setup.ts that decide what a
// line carries: pure functions, checked with tables of crontab texts.
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cronAssignments, cronJobEnvironment, settingsCronWillMiss } from '../lib/cron/setup.ts';
import {
  cronLine,
  crontabDiff,
  findManagedLines,
  foreignBackupLines,
  managedJobOf,
  managedLinesProblem,
  planCrontab,
  removeManagedLines,
  type ManagedLine,
} from '../lib/cron/crontab.ts';
import { UsageError } from '../lib/errors.ts';
import { resolveSettings } from '../lib/settings.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const log = '/share/CACHEDEV1_DATA/planetarion/logs/backup.log';
const exe = '/share/CACHEDEV1_DATA/planetarion/backup-database';
const backupLine = (schedule = '0 2,10,18 * * *'): ManagedLine => ({
  job: 'backup',
  line: cronLine({ job: 'backup', schedule, env: [], argv: [exe], log }),
});
const drillLine = (schedule = '0 4 * * 0'): ManagedLine => ({
  job: 'drill',
  line: cronLine({
    job: 'drill',
    schedule,
    env: [],
    argv: ['/share/CACHEDEV1_DATA/planetarion/restore-database', '--test', 'latest'],
    log,
  }),
});

/** A QNAP-like crontab: other jobs, comments, blank lines, tabs, trailing spaces, a CRLF line, the old script's line. */
const qnap = [
  '# m h dom m dow cmd',
  '0 3 * * * /sbin/hwclock -s',
  '',
  '   ',
  '0\t4\t*\t*\t*\t/etc/init.d/ImRd.sh bgThGen   ',
  '  30 7 * * 1 /sbin/qpkg_cli --check_license 0 > /dev/null 2>/dev/null',
  'MAILTO=""',
  '0 2,10,18 * * * /share/CACHEDEV1_DATA/planetarion/backup-database.sh >> /share/CACHEDEV1_DATA/planetarion/logs/backup.log 2>&1',
  '# 0 1 * * * backup-database # planetarion-backup:backup manual note',
  '10 15 * * * /usr/bin/power_clean -c 2>/dev/null\r',
  '',
].join('\n');

/** The text without its managed lines: what must survive any plan, byte for byte. */
const foreign = (text: string) =>
  text
    .split('\n')
    .filter((l) => managedJobOf(l) === undefined)
    .join('\n');

const plan = suite('planCrontab');

const installCases: Array<{ name: string; before: string; desired: ManagedLine[]; after: string }> = [
  {
    name: 'into an empty crontab',
    before: '',
    desired: [backupLine(), drillLine()],
    after: `${backupLine().line}\n${drillLine().line}\n`,
  },
  {
    name: 'after other jobs, comments, blank lines and odd whitespace',
    before: qnap,
    desired: [backupLine(), drillLine()],
    after: `${qnap}${backupLine().line}\n${drillLine().line}\n`,
  },
  {
    name: 'after a last line without a newline (only that newline is added)',
    before: '0 3 * * * /sbin/hwclock -s',
    desired: [backupLine()],
    after: `0 3 * * * /sbin/hwclock -s\n${backupLine().line}\n`,
  },
  {
    name: 'a new schedule replaces the line where it stands',
    before: `# top\n${backupLine().line}\n0 3 * * * other\n${drillLine().line}\n# end`,
    desired: [backupLine('15 3 * * *'), drillLine('0 5 * * 6')],
    after: `# top\n${backupLine('15 3 * * *').line}\n0 3 * * * other\n${drillLine('0 5 * * 6').line}\n# end`,
  },
  {
    name: 'duplicates (a hand copy, an old run) collapse into one at the first place',
    before: `${backupLine('1 1 * * *').line}\nx\n${backupLine('2 2 * * *').line}\n${backupLine('3 3 * * *').line}\n`,
    desired: [backupLine()],
    after: `${backupLine().line}\nx\n`,
  },
  {
    name: 'without the drill (--no-drill) an installed drill line goes',
    before: `a\n${drillLine().line}\nb\n${backupLine().line}\n`,
    desired: [backupLine()],
    after: `a\nb\n${backupLine().line}\n`,
  },
  {
    name: 'a managed line last without a newline gets one; the rest keeps its bytes',
    before: `a \t\n${backupLine('1 1 * * *').line}`,
    desired: [backupLine()],
    after: `a \t\n${backupLine().line}\n`,
  },
  {
    name: 'a foreign line that merely mentions backup-database or the marker text is kept',
    before:
      '0 1 * * * /opt/backup-database --keep 9\n0 2 * * * echo planetarion-backup:backup # planetarion-backup:backups\n',
    desired: [backupLine()],
    after: `0 1 * * * /opt/backup-database --keep 9\n0 2 * * * echo planetarion-backup:backup # planetarion-backup:backups\n${backupLine().line}\n`,
  },
];
for (const c of installCases) {
  plan(`install ${c.name}`, () => {
    const after = planCrontab(c.before, c.desired);
    assert.fixture(after, c.after);
    assert.is(planCrontab(after, c.desired), after, 'installing twice gives the same text');
    assert.is(managedLinesProblem(after, c.desired), undefined);
  });
}

plan('every foreign line survives install, re-install and uninstall byte for byte, in order', () => {
  const texts = [qnap, qnap.replace(/\n$/, ''), `\n\n${qnap}\t\n`, installCases[3]!.before];
  for (const text of texts) {
    const installed = planCrontab(text, [backupLine(), drillLine()]);
    const again = planCrontab(installed, [backupLine('*/5 * * * *')]);
    const removed = removeManagedLines(again);
    for (const t of [installed, again, removed])
      assert.is(foreign(t).replace(/\n+$/, ''), foreign(text).replace(/\n+$/, ''));
    assert.equal(
      findManagedLines(again).map((l) => l.schedule),
      ['*/5 * * * *'],
    );
  }
});

const uninstallCases: Array<{ name: string; before: string; after: string }> = [
  {
    name: 'install then uninstall gives the original back exactly',
    before: planCrontab(qnap, [backupLine(), drillLine()]),
    after: qnap,
  },
  { name: 'a crontab without managed lines is untouched', before: qnap, after: qnap },
  { name: 'a missing final newline stays missing', before: `a\n${backupLine().line}\n\tb  `, after: 'a\n\tb  ' },
  { name: 'a commented-out (disabled) managed line goes too', before: `#${backupLine().line}\nz\n`, after: 'z\n' },
  { name: 'only managed lines: empty', before: `${backupLine().line}\n${drillLine().line}\n`, after: '' },
];
for (const c of uninstallCases) {
  plan(`uninstall: ${c.name}`, () => {
    assert.fixture(removeManagedLines(c.before), c.after);
    assert.is(removeManagedLines(removeManagedLines(c.before)), c.after);
  });
}

plan('refuses a desired line that does not carry its own marker', () => {
  assert.throws(() => planCrontab('', [{ job: 'drill', line: backupLine().line }]), /marker/);
});
plan.run();

const line = suite('cronLine');
line('schedule, assignments, absolute executable, log appended with stderr, marker last', () => {
  const text = cronLine({
    job: 'backup',
    schedule: '0 2 * * *',
    env: [['PLANETARION_DIR', '/nas/p b']],
    argv: ['/nas/p b/backup-database'],
    log: '/nas/p b/logs/backup.log',
  });
  assert.is(
    text,
    "0 2 * * * PLANETARION_DIR='/nas/p b' '/nas/p b/backup-database' >> '/nas/p b/logs/backup.log' 2>&1 # planetarion-backup:backup",
  );
  assert.is(managedJobOf(text), 'backup');
  assert.equal(
    findManagedLines(`${text}\n`).map((l) => [l.job, l.schedule]),
    [['backup', '0 2 * * *']],
  );
});
line('refuses % and line breaks, which cron would turn into newlines', () => {
  for (const bad of ['/nas/100%', '/nas/a\nb']) {
    assert.throws(
      () =>
        cronLine({ job: 'backup', schedule: '* * * * *', env: [['PLANETARION_DIR', bad]], argv: ['/x'], log: '/l' }),
      (e: Error) => e instanceof UsageError && /cannot go into a crontab line/.test(e.message),
    );
  }
});
line('/bin/sh runs the command part with every odd value intact (the way cron hands it over)', () => {
  const dir = makeTempDir('planetarion-cronline-');
  try {
    const odd = `${dir}/it's a "dir" $HOME \`x\` ;&|*`;
    execFileSync('mkdir', ['-p', odd]);
    const script = join(odd, 'backup-database');
    writeFileSync(script, '#!/bin/sh\nprintf "%s\\n" "$PLANETARION_DIR" "$PLANETARION_DB_USER" "$@"\necho err >&2\n');
    chmodSync(script, 0o755);
    const text = cronLine({
      job: 'drill',
      schedule: '0 4 * * 0',
      env: [
        ['PLANETARION_DIR', odd],
        ['PLANETARION_DB_USER', 'we$ird'],
      ],
      argv: [script, '--test', 'latest'],
      log: join(odd, 'backup.log'),
    });
    const command = text.replace(/^(\S+\s+){5}/, '');
    execFileSync('/bin/sh', ['-c', command], { env: { PATH: '/usr/bin:/bin' } });
    assert.is(readFileSync(join(odd, 'backup.log'), 'utf8'), `${odd}\nwe$ird\n--test\nlatest\nerr\n`);
  } finally {
    removeTempDir(dir);
  }
});
line.run();

const problems = suite('managedLinesProblem / foreignBackupLines');
problems('names what is missing, doubled, different or unexpected', () => {
  const b = backupLine();
  const d = drillLine();
  assert.is(managedLinesProblem(`${b.line}\n${d.line}\n`, [b, d]), undefined);
  assert.match(managedLinesProblem('x\n', [b])!, /backup line is missing/);
  assert.match(managedLinesProblem(`${b.line}\n${b.line}\n`, [b])!, /2 times/);
  assert.match(managedLinesProblem(`${backupLine('1 * * * *').line}\n`, [b])!, /differs/);
  assert.match(managedLinesProblem(`${b.line}\n${d.line}\n`, [b])!, /unexpected drill line/);
  assert.match(managedLinesProblem(`${b.line}\n`, [])!, /unexpected backup line/);
});
problems('warns about an active foreign line that runs a backup, not about comments or ours', () => {
  assert.equal(foreignBackupLines(planCrontab(qnap, [backupLine()])), [
    '0 2,10,18 * * * /share/CACHEDEV1_DATA/planetarion/backup-database.sh >> /share/CACHEDEV1_DATA/planetarion/logs/backup.log 2>&1',
  ]);
});
problems.run();

const diff = suite('crontabDiff');
diff('same text: empty', () => {
  assert.is(crontabDiff(qnap, qnap, 'crontab'), '');
});
diff('a changed schedule: one - and one + line inside a hunk with context', () => {
  const before = planCrontab('a\nb\nc\nd\ne\n', [backupLine()]);
  const after = planCrontab(before, [backupLine('15 3 * * *')]);
  assert.fixture(
    crontabDiff(before, after, '/etc/config/crontab'),
    [
      '--- /etc/config/crontab',
      '+++ /etc/config/crontab (new)',
      '@@ -3,4 +3,4 @@',
      ' c',
      ' d',
      ' e',
      `-${backupLine().line}`,
      `+${backupLine('15 3 * * *').line}`,
      '',
    ].join('\n'),
  );
});
diff('lines added to a file without a final newline', () => {
  assert.fixture(
    crontabDiff('a', planCrontab('a', [backupLine()]), 'c'),
    [
      '--- c',
      '+++ c (new)',
      '@@ -1,1 +1,2 @@',
      '-a',
      '\\ No newline at end of file',
      '+a',
      `+${backupLine().line}`,
      '',
    ].join('\n'),
  );
});
diff('far-apart changes get separate hunks', () => {
  const before = `${backupLine().line}\n1\n2\n3\n4\n5\n6\n7\n8\n${drillLine().line}\n`;
  const out = crontabDiff(before, removeManagedLines(before), 'c');
  assert.equal(
    out.split('\n').filter((l) => l.startsWith('@@')),
    ['@@ -1,4 +1,3 @@', '@@ -7,4 +6,3 @@'],
  );
});
diff.run();

const assignments = suite('cronAssignments');
const configAt = (files: Record<string, string>) => (path: string) => files[path];
const settingsWith = (flags: Record<string, string>, files: Record<string, string> = {}) =>
  resolveSettings({ flags, env: {}, readFile: configAt(files) });
assignments('all defaults: the line needs no assignment', () => {
  assert.equal(cronAssignments(settingsWith({}), undefined, configAt({})), []);
});
assignments('a non-default dir is carried; backups/logs derived from it are not', () => {
  assert.equal(cronAssignments(settingsWith({ dir: '/nas/p' }), undefined, configAt({})), [
    ['PLANETARION_DIR', '/nas/p'],
  ]);
});
assignments("settings from the dir's planetarion.env are not repeated; flags that differ from it are", () => {
  const files = { '/nas/p/planetarion.env': 'PLANETARION_DB_CONTAINER=db-from-file\nPLANETARION_LOG_DIR=/var/log/p\n' };
  const s = settingsWith({ dir: '/nas/p', 'db-name': 'game', docker: '/opt/docker' }, files);
  assert.is(s.container, 'db-from-file');
  assert.equal(cronAssignments(s, undefined, configAt(files)), [
    ['PLANETARION_DIR', '/nas/p'],
    ['PLANETARION_DB_NAME', 'game'],
    ['DOCKER', '/opt/docker'],
  ]);
});
assignments("a docker found only on this shell's PATH is pinned", () => {
  assert.equal(cronAssignments(settingsWith({}), '/usr/local/bin/docker', configAt({})), [
    ['DOCKER', '/usr/local/bin/docker'],
  ]);
});
assignments.run();

const environment = suite('cron environment');
environment("the self test gets cron's PATH and the line's assignments, nothing of this shell", () => {
  const env = cronJobEnvironment([['PLANETARION_DIR', '/nas']], {
    HOME: '/root',
    USER: 'admin',
    PATH: '/opt/bin:/usr/bin',
    PLANETARION_KEEP: '9',
  });
  assert.equal(env, {
    PATH: '/usr/bin:/bin',
    SHELL: '/bin/sh',
    HOME: '/root',
    LOGNAME: 'admin',
    PLANETARION_DIR: '/nas',
  });
});
environment('settings only this shell has are named, so the operator can move them to planetarion.env', () => {
  assert.equal(
    settingsCronWillMiss({ PLANETARION_KEEP: '9', PLANETARION_DIR: '/x', PLANETARION_SCHEDULE: '* * * * *' }),
    ['PLANETARION_KEEP'],
  );
});
environment.run();
