// The deployment's journals share one reader and writer: written 0600 in a 0700 deploy/ folder,
// read back as written, removed; one that is not JSON or not of its kind is an error naming the
// file and the fix, never taken for "no journal".
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  journalFileName,
  readJournal,
  removeJournal,
  writeJournal,
  type SwitchJournal,
} from '../lib/deploy/journal.ts';

const slot = { project: 'planetarion-s1', slotId: 's1', managed: true, containers: [], since: 'then' };
const journal: SwitchJournal = {
  kind: 'deploy',
  phase: 'renaming',
  started: '2026-12-01T03:00:00.000Z',
  outgoing: { slot: undefined, containers: [] },
  incoming: { slot, containers: [] },
  stateAfter: { live: slot },
  stateUndone: {},
};

test('the switch journal: written 0600 in a 0700 folder, read back, removed; corrupt or foreign content is an error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pb-journal-'));
  try {
    assert.is(readJournal(dir), undefined);
    writeJournal(dir, journal);
    assert.equal(readJournal(dir), JSON.parse(JSON.stringify(journal)));
    assert.is(statSync(join(dir, 'deploy', journalFileName)).mode & 0o777, 0o600);
    assert.is(statSync(join(dir, 'deploy')).mode & 0o777, 0o700);
    for (const content of ['{"kind": "deploy"', '[]', '{"phase": "renaming"}', 'null']) {
      writeFileSync(join(dir, 'deploy', journalFileName), content);
      assert.throws(
        () => readJournal(dir),
        (error: Error) =>
          /the switch journal .*switch\.json is corrupt/.test(error.message) &&
          /docker rename/.test((error as Error & { advice?: string }).advice ?? ''),
        content,
      );
    }
    removeJournal(dir);
    removeJournal(dir);
    assert.is(readJournal(dir), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
