// readDeployState: no file is "no deployment yet"; a file that cannot be read or parsed is an
// error naming it and the fix, never a silent {} (which would make a live slot look absent).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readDeployState, writeDeployState } from '../lib/deploy/state.ts';
import { CliError } from '../lib/errors.ts';
import { TempDirs } from './helpers/tmp.ts';

const dirs = new TempDirs('pbstate');
const test = suite('readDeployState');

test('no state file: empty; a written one reads back', () => {
  const dir = dirs.make();
  assert.equal(readDeployState(dir), {});
  writeDeployState(dir, { lastDeploy: undefined });
  assert.equal(readDeployState(dir), {});
});

test('a corrupt state file is a usage error naming the file and how to recover', () => {
  for (const text of ['{"live": {"project"', '', '[1, 2]', 'null']) {
    const dir = dirs.make();
    mkdirSync(join(dir, 'deploy'));
    writeFileSync(join(dir, 'deploy/state.json'), text);
    try {
      readDeployState(dir);
      assert.unreachable(`no error for ${JSON.stringify(text)}`);
    } catch (error) {
      assert.instance(error, CliError);
      assert.is((error as CliError).exitCode, 2);
      assert.is(
        (error as CliError).message,
        `the deployment state ${join(dir, 'deploy/state.json')} is corrupt (not a JSON object)`,
      );
      assert.match((error as CliError).advice!, /mv .*state\.json .*state\.json\.bad/);
    }
  }
});

test('an unreadable state file is an error too', () => {
  const dir = dirs.make();
  mkdirSync(join(dir, 'deploy/state.json'), { recursive: true });
  assert.throws(
    () => readDeployState(dir),
    (e: CliError) => e.exitCode === 2 && /cannot read the deployment state .*EISDIR/.test(e.message),
  );
});

test.after(() => dirs.removeAll());
test.run();
