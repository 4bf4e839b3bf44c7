// Taking over the old shell scripts, as data and on real files: their cron line is commented out
// where it stands and put back exactly by --uninstall; their scripts move to old-scripts/ and back.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  cronLine,
  isOldScriptLine,
  oldScriptLines,
  planCrontab,
  removeManagedLines,
  restoreOldScriptLines,
  retiredMarker,
  retireOldScriptLines,
} from '../lib/cron/crontab.ts';
import { isOldScriptName, moveOldScripts, restoreOldScripts } from '../lib/cron/old-scripts.ts';
import { suiteTempDir } from './helpers/tmp.ts';

const oldLine = '0 2,10,18 * * * /share/CACHEDEV1_DATA/planetarion/backup-database.sh';
const oldLineLogged =
  '0 2,10,18 * * * /share/CACHEDEV1_DATA/planetarion/backup-database.sh >> /share/CACHEDEV1_DATA/planetarion/logs/backup.log 2>&1';
const managed = {
  job: 'backup' as const,
  line: cronLine({
    job: 'backup',
    schedule: '0 2,10,18 * * *',
    env: [],
    argv: ['/share/CACHEDEV1_DATA/planetarion/backup-database'],
    log: '/share/CACHEDEV1_DATA/planetarion/logs/backup.log',
  }),
};
const crontab = [
  '# m h dom m dow cmd',
  '0 3 * * * /sbin/hwclock -s',
  oldLine,
  '',
  '10 15 * * * /usr/bin/power_clean -c 2>/dev/null',
].join('\n');

const lines = suite('the old script cron line');
lines('recognised: the old script by any path, with a log redirect; not ours, not comments, not other scripts', () => {
  assert.ok(isOldScriptLine(oldLine));
  assert.ok(isOldScriptLine(oldLineLogged));
  assert.ok(isOldScriptLine('0 */6 * * * cd /x && ./backup-database.sh'));
  assert.not.ok(isOldScriptLine(`# ${oldLine}`));
  assert.not.ok(isOldScriptLine(managed.line));
  assert.not.ok(isOldScriptLine('0 2 * * * /x/backup-database'));
  assert.not.ok(isOldScriptLine('0 2 * * * /x/backup-database.sh.bak'));
});
lines(
  'retired in place behind the marker, the rest byte for byte; the managed line appended; uninstall gives the crontab back exactly',
  () => {
    const { text, retired } = retireOldScriptLines(crontab);
    assert.equal(retired, [oldLine]);
    assert.fixture(text, crontab.replace(oldLine, retiredMarker + oldLine));
    const installed = planCrontab(text, [managed]);
    assert.equal(oldScriptLines(installed), []);
    const back = restoreOldScriptLines(removeManagedLines(installed));
    assert.equal(back.restored, [oldLine]);
    assert.fixture(back.text, `${crontab}\n`);
  },
);
lines(
  'a line only the running cron holds (QNAP, loaded with crontab -) is recorded in the file once, and put back there',
  () => {
    const file = '0 3 * * * /sbin/hwclock -s\n';
    const first = retireOldScriptLines(file, [oldLine]);
    assert.fixture(first.text, `${file}${retiredMarker}${oldLine}\n`);
    assert.equal(
      retireOldScriptLines(first.text, [oldLine]),
      { text: first.text, retired: [] },
      'a second takeover records nothing twice',
    );
    assert.fixture(restoreOldScriptLines(first.text).text, `${file}${oldLine}\n`);
  },
);
lines.run();

const files = suite('the old scripts');
const dir = suiteTempDir(files, { prefix: 'planetarion-old-scripts-' });
files('the names: the four scripts and every deploy-to-qnap variant, not the new executables', () => {
  for (const name of [
    'backup-database.sh',
    'setup-backup-cron.sh',
    'restore-database.sh',
    'deploy-to-qnap.sh',
    'deploy-to-qnap-simple.sh',
  ])
    assert.ok(isOldScriptName(name), name);
  for (const name of ['backup-database', 'deploy-to-qnap', 'planetarion.env', 'other.sh'])
    assert.not.ok(isOldScriptName(name), name);
});
files('moved to old-scripts/ (0700) and back; a name already there is never overwritten', () => {
  for (const name of ['backup-database.sh', 'deploy-to-qnap-simple.sh', 'backup-database', 'docker-compose.qnap.yml'])
    writeFileSync(join(dir(), name), name);
  mkdirSync(join(dir(), 'old-scripts'), { mode: 0o700 });
  writeFileSync(join(dir(), 'old-scripts/backup-database.sh'), 'earlier');
  const moved = moveOldScripts(dir());
  assert.equal(
    moved.moved.map((m) => m.to.slice(dir().length + 1)),
    ['old-scripts/backup-database.sh.1', 'old-scripts/deploy-to-qnap-simple.sh'],
  );
  assert.equal(readdirSync(dir()).sort(), ['backup-database', 'docker-compose.qnap.yml', 'old-scripts']);
  assert.is(readFileSync(join(dir(), 'old-scripts/backup-database.sh'), 'utf8'), 'earlier');
  const back = restoreOldScripts(dir());
  assert.equal(
    back.moved.map((m) => m.to.slice(dir().length + 1)),
    ['backup-database.sh', 'deploy-to-qnap-simple.sh'],
  );
  assert.is(readFileSync(join(dir(), 'backup-database.sh'), 'utf8'), 'earlier');
  assert.ok(existsSync(join(dir(), 'old-scripts/backup-database.sh.1')), 'the second copy stays, nothing overwritten');
});
files.run();
