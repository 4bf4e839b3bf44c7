// The names of the databases a restore keeps beside the live one, as data: the previous database
// (<live>_previous_<stamp>, what --rollback brings back) and the scratch databases of a restore,
// a drill and a streamed load, each cut to fit PostgreSQL's 63-byte names, and the patterns that
// find them again (to drop older previous databases and a killed run's scratch databases).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type DatabaseKind, kindPattern, previousPattern, suffixName } from '../lib/restore/database-swap.ts';

const kinds: DatabaseKind[] = ['previous', 'restore', 'drill', 'stream'];
const stamp = '20260102_030405';

const naming = suite("the restore's database names");

naming('<live>_<kind>_<stamp> for a live name that fits', () => {
  assert.is(suffixName('planetarion', 'previous', stamp), 'planetarion_previous_20260102_030405');
  assert.is(suffixName('planetarion', 'restore', stamp), 'planetarion_restore_20260102_030405');
  assert.is(suffixName('planetarion', 'drill', stamp), 'planetarion_drill_20260102_030405');
  assert.is(suffixName('planetarion', 'stream', stamp), 'planetarion_stream_20260102_030405');
});

naming('a long live name is cut so the whole name is 63 bytes at most, kind and stamp kept whole', () => {
  const live = `game_${'x'.repeat(58)}`; // 63: the longest name PostgreSQL keeps
  for (const kind of kinds) {
    const name = suffixName(live, kind, stamp);
    assert.is(name.length, 63, `${kind}: ${name}`);
    assert.ok(name.endsWith(`_${kind}_${stamp}`), name);
    assert.ok(live.startsWith(name.slice(0, name.length - kind.length - stamp.length - 2)), name);
  }
  const short = 'p'.repeat(63 - 'previous'.length - stamp.length - 2);
  assert.is(suffixName(short, 'previous', stamp), `${short}_previous_${stamp}`, 'exactly fitting: nothing cut');
  assert.is(suffixName(`${short}q`, 'previous', stamp), `${short}_previous_${stamp}`, 'one more: that one is cut');
});

naming('a live name of multi-byte characters is cut by bytes, never inside a character', () => {
  const live = `spiel_${'ü'.repeat(28)}`; // 62 bytes, 34 characters
  for (const kind of kinds) {
    const name = suffixName(live, kind, stamp);
    assert.ok(Buffer.byteLength(name) <= 63, `${kind}: ${name} is ${Buffer.byteLength(name)} bytes`);
    assert.ok(Buffer.byteLength(name) >= 62, `${kind}: ${name} is cut more than a character needs`);
    const prefix = name.slice(0, name.length - kind.length - stamp.length - 2);
    assert.ok(live.startsWith(prefix), name);
    assert.not.ok(prefix.includes('\uFFFD'), name);
    assert.ok(kindPattern(live, [kind]).test(name), name);
  }
});

naming('the previous pattern finds previous databases of any time, of this live database only', () => {
  const pattern = previousPattern('planetarion');
  assert.ok(pattern.test(suffixName('planetarion', 'previous', stamp)));
  assert.ok(pattern.test('planetarion_previous_19991231_235959'));
  for (const other of [
    'planetarion',
    'planetarion_restore_20260102_030405',
    'planetarion_previous_20260102_0304',
    'planetarion_previous_20260102_030405_old',
    'xplanetarion_previous_20260102_030405',
    'planetarion2_previous_20260102_030405',
    'other_previous_20260102_030405',
  ])
    assert.not.ok(pattern.test(other), other);
});

naming('each kind pattern matches the names suffixName gives, and no other kind', () => {
  for (const live of ['planetarion', `long_${'y'.repeat(58)}`]) {
    for (const kind of kinds) {
      const pattern = kindPattern(live, [kind]);
      for (const other of kinds)
        assert.is(pattern.test(suffixName(live, other, stamp)), other === kind, `${live}: ${kind} vs ${other}`);
    }
  }
  const scratch = kindPattern('planetarion', ['restore', 'drill', 'stream']);
  assert.ok(scratch.test('planetarion_drill_20260102_030405'));
  assert.ok(scratch.test('planetarion_stream_20260102_030405'));
  assert.not.ok(scratch.test('planetarion_previous_20260102_030405'), 'the previous database is no scratch');
});

naming("a live name's punctuation is matched literally, never as a pattern", () => {
  const pattern = previousPattern('game.db+1');
  assert.ok(pattern.test(suffixName('game.db+1', 'previous', stamp)));
  assert.not.ok(pattern.test(`gameXdb+1_previous_${stamp}`), 'the dot is a dot');
  assert.not.ok(pattern.test(`game.dbb1_previous_${stamp}`), 'the plus is a plus');
  assert.ok(previousPattern('spiel-ö').test(suffixName('spiel-ö', 'previous', stamp)));
});

naming.run();
