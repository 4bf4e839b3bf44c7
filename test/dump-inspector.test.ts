// DumpInspector over synthetic dumps fed in chunks of every size: a setval line split across
// chunks, a row that merely contains the words, a line longer than the carry limit, the
// trailer and \restrict pair, and a broken gzip stream.
import { gzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DumpInspector, parseSetval } from '../lib/dump/inspector.ts';

const dump = [
  '--',
  '-- PostgreSQL database dump',
  '--',
  '\\restrict AbC123',
  '-- Dumped from database version 15.14 (Debian 15.14-1.pgdg120+1)',
  '-- Dumped by pg_dump version 15.14 (Debian 15.14-1.pgdg120+1)',
  'COPY public.notes (id, body) FROM stdin;',
  "1\tSELECT pg_catalog.setval('public.fake', 99, true);",
  `2\t${'x'.repeat(1_200_000)}`,
  '\\.',
  'COPY public.log (line) FROM stdin;',
  "SELECT pg_catalog.setval('public.tick_seq', 5, true);",
  "SELECT pg_catalog.setval('public.fake', 99, true);",
  '\\\\.',
  '\\.',
  "SELECT pg_catalog.setval('public.tick_seq', 4321, true);",
  `SELECT pg_catalog.setval('game."Odd ''name"""', 7, false);`,
  '\\unrestrict AbC123',
  '',
  '--',
  '-- PostgreSQL database dump complete',
  '--',
  '',
].join('\n');

async function inspect(bytes: Buffer, compressed: boolean, chunkSize: number, sequences?: boolean) {
  const inspector = new DumpInspector(compressed, { sequences });
  for (let i = 0; i < bytes.length; i += chunkSize) await inspector.write(bytes.subarray(i, i + chunkSize));
  return inspector.end();
}

const expectedSequences = [
  { name: 'public.tick_seq', value: '4321', isCalled: true },
  { name: 'game."Odd \'name"""', value: '7', isCalled: false },
];

for (const compressed of [false, true]) {
  const bytes = compressed ? gzipSync(dump) : Buffer.from(dump);
  // Small chunks only for the gzip form (a few KB): on the 1.2 MB plain form they would only cost time.
  for (const chunkSize of compressed ? [1, 7, 64, 4096, bytes.length] : [4093, 65536, bytes.length]) {
    test(`${compressed ? 'gzip' : 'plain'} in ${chunkSize}-byte chunks: sequences, trailer, restrict pair, versions, size`, async () => {
      const found = await inspect(bytes, compressed, chunkSize);
      assert.equal(found.sequences, expectedSequences);
      assert.ok(found.complete);
      assert.ok(found.restrictMatched);
      assert.ok(found.gzipIntact);
      assert.is(found.sqlBytes, Buffer.byteLength(dump));
      assert.is(found.serverVersion, '15.14 (Debian 15.14-1.pgdg120+1)');
      assert.is(found.pgDumpVersion, '15.14 (Debian 15.14-1.pgdg120+1)');
    });
  }
}

test('a chunk boundary at every byte of the setval lines and around the long row still finds exactly the two', async () => {
  const bytes = Buffer.from(dump);
  const from = dump.indexOf('\\.\n') - 3;
  const to = dump.indexOf('\\unrestrict') + 2;
  for (let cut = from; cut < to; cut++) {
    const inspector = new DumpInspector(false);
    await inspector.write(bytes.subarray(0, cut));
    await inspector.write(bytes.subarray(cut));
    assert.equal((await inspector.end()).sequences, expectedSequences, `cut at ${cut}`);
  }
});

test('a dump cut short: no trailer, no matching \\unrestrict; a truncated gzip stream is reported broken', async () => {
  const cut = dump.slice(0, dump.indexOf('\\unrestrict'));
  const plain = await inspect(Buffer.from(cut), false, 4096);
  assert.not.ok(plain.complete);
  assert.not.ok(plain.restrictMatched);
  const gz = gzipSync(dump);
  const broken = await inspect(gz.subarray(0, gz.length - 10), true, 4096);
  assert.not.ok(broken.gzipIntact);
  assert.ok(broken.gzipError);
  const flipped = Buffer.from(gz);
  flipped[flipped.length - 6]! ^= 0xff; // the CRC32 trailer
  assert.not.ok((await inspect(flipped, true, 4096)).gzipIntact);
});

test('without sequences (no fingerprint): the same checks of the stream, the trailer and the head, no setval read', async () => {
  const gz = gzipSync(dump);
  const whole = await inspect(gz, true, 4096, false);
  assert.equal(whole.sequences, []);
  assert.ok(whole.complete && whole.restrictMatched && whole.gzipIntact);
  assert.is(whole.sqlBytes, Buffer.byteLength(dump));
  assert.is(whole.pgDumpVersion, '15.14 (Debian 15.14-1.pgdg120+1)');
  const cut = await inspect(Buffer.from(dump.slice(0, dump.indexOf('\\unrestrict'))), false, 4096, false);
  assert.not.ok(cut.complete);
  assert.not.ok(cut.restrictMatched);
  assert.not.ok((await inspect(gz.subarray(0, gz.length - 10), true, 4096, false)).gzipIntact);
});

test('a setval() of the same sequence twice is refused: the dump is not one pg_dump wrote', async () => {
  const twice = dump.replace('\\unrestrict', "SELECT pg_catalog.setval('public.tick_seq', 1, false);\n\\unrestrict");
  try {
    await inspect(Buffer.from(twice), false, 4096);
    assert.unreachable('accepted a duplicate sequence');
  } catch (error) {
    assert.match(String(error), /sets sequence public\.tick_seq more than once/);
  }
});

test('parseSetval reads the name (quotes undoubled), value and is_called; other lines are not setval', () => {
  assert.equal(parseSetval("SELECT pg_catalog.setval('public.s', -5, false);"), {
    name: 'public.s',
    value: '-5',
    isCalled: false,
  });
  assert.is(parseSetval("SELECT pg_catalog.setval('public.s', 5, true); -- x"), undefined);
  assert.is(parseSetval('SELECT 1;'), undefined);
});

test.run();
