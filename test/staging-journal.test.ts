// The staging journal decides whether the next deployment removes the slot a killed run was
// building: it must never remove a slot that serves or is kept for --rollback.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  readStagingJournal,
  removeStagingJournal,
  type StagingJournal,
  stagedSlotFate,
  writeStagingJournal,
} from '../lib/deploy/staging-journal.ts';
import type { Slot } from '../lib/deploy/state.ts';

const journal: StagingJournal = {
  project: 'planetarion-s20261201_031500',
  file: '/nas/deploy/planetarion-s20261201_031500.yml',
  containers: [
    { service: 'db', name: 'planetarion-db-1-s20261201_031500', canonicalName: 'planetarion-db-1' },
    { service: 'app', name: 'planetarion-app-1-s20261201_031500', canonicalName: 'planetarion-app-1' },
  ],
  folders: ['/share/pgdata-s20261201_031500'],
  keepStorage: false,
};
const slot = (project: string): Slot => ({ project, slotId: 'x', managed: true, containers: [], since: 'then' });
const members = (entries: Array<[string, string]>) => new Map<string, string | undefined>(entries);

test('a slot that never served and that state.json does not name is removed', () => {
  const projectOf = members([
    ['planetarion-db-1-s20261201_031500', journal.project],
    ['planetarion-app-1-s20261201_031500', journal.project],
  ]);
  assert.is(stagedSlotFate(journal, { live: slot('planetarion-s20261130_020000') }, projectOf), 'remove');
  assert.is(stagedSlotFate(journal, {}, members([])), 'remove');
});

test('the live slot or the one kept for --rollback is kept', () => {
  assert.is(stagedSlotFate(journal, { live: slot(journal.project) }, members([])), 'keep');
  assert.is(stagedSlotFate(journal, { previous: slot(journal.project) }, members([])), 'keep');
});

test('a slot whose container holds a canonical name is kept (switched before state.json was written)', () => {
  const projectOf = members([
    ['planetarion-db-1', journal.project],
    ['planetarion-app-1-s20261201_031500', journal.project],
  ]);
  assert.is(stagedSlotFate(journal, { live: slot('planetarion-s20261130_020000') }, projectOf), 'keep');
  // The canonical name held by the live slot of another project does not count.
  const other = members([['planetarion-db-1', 'planetarion-s20261130_020000']]);
  assert.is(stagedSlotFate(journal, { live: slot('planetarion-s20261130_020000') }, other), 'remove');
});

test('written 0600, read back, removed; a corrupt journal is an error naming the fix', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pb-staging-'));
  try {
    assert.is(readStagingJournal(dir), undefined);
    writeStagingJournal(dir, journal);
    assert.equal(readStagingJournal(dir), journal);
    assert.is(statSync(join(dir, 'deploy/staging.json')).mode & 0o777, 0o600);
    writeFileSync(join(dir, 'deploy/staging.json'), '{"project": 1}');
    assert.throws(() => readStagingJournal(dir), /the staging journal .* is corrupt/);
    removeStagingJournal(dir);
    assert.is(readStagingJournal(dir), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
