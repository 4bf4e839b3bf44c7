// Which tables the freeze may leave out of the proof: the rule of staged-proof.ts on its own.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { catalogKey, type PreProof, tableKey, type TableMarks, unchangedTables } from '../lib/deploy/staged-proof.ts';

const key = (table: string) => tableKey({ schema: 'public', table });
const fp = (table: string, rows: number, digest: string) => ({ schema: 'public', table, rows, digest });
const marks = (entries: Record<string, string>, catalog = 'c1'): TableMarks =>
  new Map([...Object.entries(entries).map(([t, m]): [string, string] => [key(t), m]), [catalogKey, catalog]]);

/** Three tables equal on both sides at the pre-proof. */
const pre = (): PreProof => ({
  live: {
    marks: marks({ planets: '16384 10 0 0 a', ticks: '16390 5 0 0 b', scores: '16400 50 3 1 c' }),
    tables: new Map(
      [fp('planets', 10, '77'), fp('ticks', 5, '88'), fp('scores', 50, '99')].map((t) => [tableKey(t), t]),
    ),
  },
  next: {
    marks: marks({ planets: '20000 10 0 0 a', ticks: '20010 5 0 0 b', scores: '20020 50 3 1 c' }),
    tables: new Map(
      [fp('planets', 10, '77'), fp('ticks', 5, '88'), fp('scores', 50, '99')].map((t) => [tableKey(t), t]),
    ),
  },
});

const rule = suite('staged proof: the tables kept from the pre-proof');

rule('nothing written on either side since: every table keeps its pre-proof digest', () => {
  const p = pre();
  assert.equal([...unchangedTables(p, p.live.marks, p.next.marks)].sort(), [
    key('planets'),
    key('scores'),
    key('ticks'),
  ]);
});

rule('a table written on the live side (its counts moved) is proved again', () => {
  const p = pre();
  const live = new Map(p.live.marks).set(key('ticks'), '16390 6 0 0 b');
  assert.not.ok(unchangedTables(p, live, p.next.marks).has(key('ticks')));
  assert.ok(unchangedTables(p, live, p.next.marks).has(key('planets')));
});

rule('a table written on the new side only is proved again', () => {
  const p = pre();
  const next = new Map(p.next.marks).set(key('planets'), '20000 10 1 0 a');
  assert.not.ok(unchangedTables(p, p.live.marks, next).has(key('planets')));
});

rule('a truncated or rewritten table (new storage file) and an altered one (columns) are proved again', () => {
  const p = pre();
  const live = new Map(p.live.marks).set(key('planets'), '16500 10 0 0 a').set(key('scores'), '16400 50 3 1 d');
  const kept = unchangedTables(p, live, p.next.marks);
  assert.not.ok(kept.has(key('planets')));
  assert.not.ok(kept.has(key('scores')));
  assert.ok(kept.has(key('ticks')));
});

rule('a table whose pre-proof digests or row counts differed is proved again, not kept', () => {
  const p = pre();
  p.next.tables.set(key('ticks'), fp('ticks', 5, '89'));
  p.next.tables.set(key('scores'), fp('scores', 51, '99'));
  const kept = unchangedTables(p, p.live.marks, p.next.marks);
  assert.not.ok(kept.has(key('ticks')));
  assert.not.ok(kept.has(key('scores')));
});

rule('a table gone on either side, or missing from the pre-proof of one side, is not kept', () => {
  const p = pre();
  const live = new Map(p.live.marks);
  live.delete(key('planets'));
  assert.not.ok(unchangedTables(p, live, p.next.marks).has(key('planets')));
  p.next.tables.delete(key('ticks'));
  assert.not.ok(unchangedTables(p, p.live.marks, p.next.marks).has(key('ticks')));
});

rule('a table created since the pre-proof is never kept (it has no pre-proof digest)', () => {
  const p = pre();
  const live = new Map(p.live.marks).set(key('audit'), '17000 1 0 0 e');
  const next = new Map(p.next.marks).set(key('audit'), '21000 1 0 0 e');
  assert.not.ok(unchangedTables(p, live, next).has(key('audit')));
});

rule(
  'the catalog moved on either side (an enum value renamed, a type, a role, a reset of the counts): nothing is kept',
  () => {
    const p = pre();
    const live = new Map(p.live.marks).set(catalogKey, 'c2');
    assert.equal([...unchangedTables(p, live, p.next.marks)], []);
    const next = new Map(p.next.marks).set(catalogKey, 'c2');
    assert.equal([...unchangedTables(p, p.live.marks, next)], []);
    const none = new Map(p.next.marks);
    none.delete(catalogKey);
    assert.equal([...unchangedTables(p, p.live.marks, none)], []);
  },
);

rule('names are kept apart whatever they hold: "a.b"."c" is not "a"."b.c"', () => {
  assert.is.not(tableKey({ schema: 'a.b', table: 'c' }), tableKey({ schema: 'a', table: 'b.c' }));
});

rule.run();
