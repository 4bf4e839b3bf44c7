import { execFileSync } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../lib/errors.ts';
import { defaultDir, resolveSettings, settingSpecs } from '../lib/settings.ts';
import { parseEnvFile } from '../lib/layered.ts';

const noFile = () => undefined;

const defaults = suite('resolveSettings defaults');
defaults('match the QNAP layout of the design', () => {
  const s = resolveSettings({ env: {}, readFile: noFile });
  assert.is(s.dir, defaultDir);
  assert.is(s.backupDir, `${defaultDir}/backups`);
  assert.is(s.logDir, `${defaultDir}/logs`);
  assert.is(s.container, 'planetarion-db');
  assert.is(s.dbUser, 'planetarion_user');
  assert.is(s.dbName, 'planetarion');
  assert.is(s.keep, 3);
  assert.is(s.schedule, '0 2,10,18 * * *');
  assert.is(s.docker, undefined);
  assert.is(s.sources.keep, 'default');
});
defaults('derived dirs follow the base dir', () => {
  const s = resolveSettings({ env: { PLANETARION_DIR: '/srv/pa/' }, readFile: noFile });
  assert.is(s.dir, '/srv/pa');
  assert.is(s.backupDir, '/srv/pa/backups');
});
defaults.run();

const precedence = suite('resolveSettings precedence');
precedence('flag > env > config file > default', () => {
  const files: Record<string, string> = {
    '/srv/pa/planetarion.env':
      '# comment\nPLANETARION_KEEP=5\nPLANETARION_DB_NAME="fromfile"\nPLANETARION_DB_USER=fileuser # trailing\n',
  };
  const s = resolveSettings({
    flags: { keep: '9' },
    env: { PLANETARION_DIR: '/srv/pa', PLANETARION_KEEP: '7', PLANETARION_DB_NAME: 'fromenv' },
    readFile: (p) => files[p],
  });
  assert.is(s.keep, 9);
  assert.is(s.sources.keep, 'flag');
  assert.is(s.dbName, 'fromenv');
  assert.is(s.sources.dbName, 'env');
  assert.is(s.dbUser, 'fileuser');
  assert.is(s.sources.dbUser, 'config');
  assert.is(s.configFile, '/srv/pa/planetarion.env');
  assert.is(s.container, 'planetarion-db');
});
precedence('an empty environment variable counts as unset', () => {
  assert.is(resolveSettings({ env: { PLANETARION_KEEP: '' }, readFile: noFile }).keep, 3);
});
precedence('an empty value in planetarion.env counts as unset (PLANETARION_PING_URL= as in .qnap-deploy.env)', () => {
  const s = resolveSettings({
    env: { PLANETARION_DIR: '/x' },
    readFile: () => 'PLANETARION_PING_URL=\nPLANETARION_KEEP=""\nPLANETARION_DB_NAME=\n',
  });
  assert.is(s.pingUrl, undefined);
  assert.is(s.keep, 3);
  assert.is(s.sources.keep, 'default');
  assert.is(s.dbName, 'planetarion');
});
precedence.run();

const invalid = suite('resolveSettings refuses bad values');
const cases: Array<[string, Parameters<typeof resolveSettings>[0], RegExp]> = [
  ['PLANETARION_KEEP=0', { env: { PLANETARION_KEEP: '0' } }, /PLANETARION_KEEP '0'.*whole number from 1 to 1000/],
  ['--keep abc', { flags: { keep: 'abc' }, env: {} }, /--keep 'abc'.*whole number/],
  [
    'PLANETARION_DIR=relative/path',
    { env: { PLANETARION_DIR: 'relative/path' } },
    /PLANETARION_DIR 'relative\/path'.*absolute path/,
  ],
  [
    'container with ;',
    { env: { PLANETARION_DB_CONTAINER: 'db;rm -rf /' } },
    /PLANETARION_DB_CONTAINER 'db;rm -rf \/'.*Docker container name/,
  ],
  [
    'schedule with 6 fields',
    { env: { PLANETARION_SCHEDULE: '0 0 * * * *' } },
    /PLANETARION_SCHEDULE.*exactly 5 fields/,
  ],
  ['schedule out of range', { flags: { schedule: '61 * * * *' }, env: {} }, /--schedule '61 \* \* \* \*'.*minute/],
  ['db user with a quote', { env: { PLANETARION_DB_USER: "x'y" } }, /PLANETARION_DB_USER/],
  ['relative docker', { env: { DOCKER: 'docker' } }, /DOCKER 'docker'.*absolute/],
];
for (const [name, input, message] of cases) {
  invalid(name, () => {
    try {
      resolveSettings({ readFile: noFile, ...input });
      assert.unreachable('should refuse');
    } catch (error) {
      assert.instance(error, UsageError);
      assert.is((error as UsageError).exitCode, 2);
      assert.match((error as Error).message, message);
    }
  });
}
invalid('a config file line that is not KEY=VALUE names the file and line', () => {
  try {
    resolveSettings({ env: { PLANETARION_DIR: '/x' }, readFile: () => 'PLANETARION_KEEP=3\nnonsense here\n' });
    assert.unreachable();
  } catch (error) {
    assert.match((error as Error).message, /\/x\/planetarion.env: line 2/);
  }
});
invalid('an unreadable config file is one line naming it and the fix, exit 2', () => {
  const unreadable = (code: string) => () => {
    throw Object.assign(new Error(`${code}: x`), { code });
  };
  assert.throws(
    () => resolveSettings({ env: { PLANETARION_DIR: '/etc/passwd' }, readFile: unreadable('ENOTDIR') }),
    /PLANETARION_DIR '\/etc\/passwd' is not a directory/,
  );
  for (const [code, why] of [
    ['EACCES', /permission denied/],
    ['EISDIR', /it is a directory/],
  ] as const) {
    try {
      resolveSettings({ env: { PLANETARION_DIR: '/x' }, readFile: unreadable(code) });
      assert.unreachable();
    } catch (error) {
      assert.instance(error, UsageError);
      assert.match((error as Error).message, /cannot read the config file \/x\/planetarion\.env: /);
      assert.match((error as Error).message, why);
      assert.match((error as UsageError).advice!, /chmod 600 \/x\/planetarion\.env/);
    }
  }
});
invalid.run();

const envFile = suite('parseEnvFile');
envFile('reads exports, quotes, comments and CRLF', () => {
  const values = parseEnvFile("export A=1\r\nB='two words'\n\n# c\nC=3 # note\n");
  assert.equal(
    [...values],
    [
      ['A', '1'],
      ['B', 'two words'],
      ['C', '3'],
    ],
  );
});
envFile('a quoted value followed by a comment loses the comment and the quotes, as with `source`', () => {
  const values = parseEnvFile(`D='/share/x y' # the NAS folder\nE="a # not a comment" # one\nF='it' # it's\n`);
  assert.equal(
    [...values],
    [
      ['D', '/share/x y'],
      ['E', 'a # not a comment'],
      ['F', 'it'],
    ],
  );
  // What `sh` makes of the same lines.
  const shell = execFileSync('sh', [
    '-c',
    `D='/share/x y' # the NAS folder\nE="a # not a comment" # one\nF='it' # it's\nprintf '%s|%s|%s' "$D" "$E" "$F"`,
  ]).toString();
  assert.is(shell, '/share/x y|a # not a comment|it');
});
envFile('every setting has a unique env name and flag', () => {
  assert.is(new Set(settingSpecs.map((s) => s.env)).size, settingSpecs.length);
  assert.is(new Set(settingSpecs.map((s) => s.flag)).size, settingSpecs.length);
});
envFile.run();
