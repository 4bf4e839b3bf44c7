// The replication journal: written whole and 0600 before an online fill changes the live
// database, read back by the next run; a corrupt one is an error naming the file and what to
// put back by hand, never silently ignored (the identities it records would stay FULL).
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CliError } from '../lib/errors.ts';
import {
  type ReplicationJournal,
  readReplicationJournal,
  removeReplicationJournal,
  writeReplicationJournal,
} from '../lib/deploy/replication-journal.ts';
import { TempDirs } from './helpers/tmp.ts';

const dirs = new TempDirs('pbrepl');
const test = suite('replication journal');

const journal: ReplicationJournal = {
  name: 'planetarion_deploy_s20261130_221500',
  live: 'planetarion-db',
  user: 'planetarion_user',
  database: 'planetarion',
  next: 'planetarion-db-s20261130_221500',
  identities: [
    { table: 'public.scores', old: 'DEFAULT' },
    { table: '"Game"."Log"', old: 'NOTHING' },
  ],
};

test('none: undefined; written (0600), read back, removed', () => {
  const dir = dirs.make();
  mkdirSync(join(dir, 'deploy'), { mode: 0o700 });
  assert.is(readReplicationJournal(dir), undefined);
  writeReplicationJournal(dir, journal);
  assert.is(statSync(join(dir, 'deploy/replication.json')).mode & 0o777, 0o600);
  assert.equal(readReplicationJournal(dir), journal);
  removeReplicationJournal(dir);
  assert.is(readReplicationJournal(dir), undefined);
  removeReplicationJournal(dir);
});

test('a corrupt journal, or one with an identity that is not DEFAULT or NOTHING, is an error naming the file', () => {
  const bad = JSON.stringify({ ...journal, identities: [{ table: 'public.scores', old: 'FULL; DROP TABLE x' }] });
  for (const text of ['{"name": ', '', 'null', bad]) {
    const dir = dirs.make();
    mkdirSync(join(dir, 'deploy'));
    writeFileSync(join(dir, 'deploy/replication.json'), text);
    try {
      readReplicationJournal(dir);
      assert.unreachable(`no error for ${JSON.stringify(text)}`);
    } catch (error) {
      assert.instance(error, CliError);
      assert.match((error as CliError).message, join(dir, 'deploy/replication.json'));
    }
  }
});

test.after(() => dirs.removeAll());
test.run();
