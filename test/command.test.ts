import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { allFlags, parseCommandLine, renderHelp, type CommandSpec } from '../lib/cli/command.ts';
import { UsageError } from '../lib/errors.ts';
import { settingSpec } from '../lib/settings.ts';
import { backupDatabase } from '../scripts/backup-database.ts';
import { selfTest } from '../scripts/self-test.ts';
import { restoreDatabase } from '../scripts/restore-database.ts';
import { setupBackupCron } from '../scripts/setup-backup-cron.ts';
import { deployToQnap } from '../scripts/deploy-to-qnap.ts';

const specs: CommandSpec[] = [
  backupDatabase.spec,
  restoreDatabase.spec,
  setupBackupCron.spec,
  deployToQnap.spec,
  selfTest.spec,
];

const parse = suite('parseCommandLine');
parse('reads flags and setting flags into plain data', () => {
  const { flags, positionals } = parseCommandLine(backupDatabase.spec, ['--keep', '5', '--dry-run', '--json']);
  assert.equal(flags, { keep: '5', 'dry-run': true, json: true });
  assert.equal(positionals, []);
});
parse('an unknown flag is a usage error that points at --help', () => {
  try {
    parseCommandLine(backupDatabase.spec, ['--kep', '5']);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, UsageError);
    assert.match((error as Error).message, /backup-database: Unknown option '--kep'/);
    assert.match((error as UsageError).advice!, /backup-database --help/);
  }
});
parse('a stray argument is a usage error', () => {
  assert.throws(
    () => parseCommandLine(backupDatabase.spec, ['now']),
    (e: Error) => e instanceof UsageError && /unexpected argument 'now'/.test(e.message),
  );
});
parse('a flag that needs a value without one is a usage error', () => {
  assert.throws(
    () => parseCommandLine(backupDatabase.spec, ['--keep']),
    (e: Error) => e instanceof UsageError,
  );
});
parse.run();

const help = suite('renderHelp');
for (const spec of specs) {
  help(`${spec.name}: lists every flag, every setting with its env name and default, exit codes, an example`, () => {
    const text = renderHelp(spec);
    assert.match(text, `Usage: ${spec.name}`);
    for (const flag of allFlags(spec)) assert.match(text, `--${flag.name}`);
    for (const key of spec.settings) {
      const s = settingSpec(key);
      assert.match(text, `env ${s.env}; default: `);
    }
    for (const code of ['0 ', '1 ', '2 ', '75']) assert.match(text, new RegExp(`^  ${code}`, 'm'));
    assert.match(text, /Examples:\n {2}\S/);
    assert.is(
      spec.dryRun,
      allFlags(spec).some((f) => f.name === 'dry-run'),
    );
  });
}
help.run();
