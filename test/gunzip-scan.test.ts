// GunzipScan against zlib's own verdicts: the output (through one reused buffer) equals
// gunzipSync's for every input chunking and output size, and every kind of broken stream is
// named: truncated body, truncated trailer, a flipped byte, a wrong CRC, trailing garbage,
// no gzip at all, nothing at all.
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GunzipScan } from '../lib/dump/gunzip-scan.ts';

// Compressible text with incompressible stretches: long matches and literals both occur.
const plain = Buffer.concat(
  Array.from({ length: 200 }, (_, i) =>
    Buffer.concat([Buffer.from(`${i}\t${'row '.repeat(500)}\n`), randomBytes(3000)]),
  ),
);
const gz = gzipSync(plain, { level: 1 });

function scan(input: Buffer, inputChunk: number, outputSize?: number) {
  const pieces: Buffer[] = [];
  const scanner = new GunzipScan((data) => pieces.push(Buffer.from(data)), outputSize);
  for (let i = 0; i < input.length; i += inputChunk) scanner.write(input.subarray(i, i + inputChunk));
  scanner.end();
  return { output: Buffer.concat(pieces), error: scanner.error, pieces: pieces.length };
}

test('decodes exactly what gunzipSync does, for any input chunking and output buffer size', () => {
  for (const inputChunk of [1, 7, 4096, gz.length]) {
    for (const outputSize of [1024, 64 * 1024, undefined]) {
      if (inputChunk === 1 && outputSize !== 1024) continue; // byte by byte once is enough
      const r = scan(gz, inputChunk, outputSize);
      assert.is(r.error, undefined, `chunk ${inputChunk}, output ${outputSize}`);
      assert.ok(r.output.equals(plain), `chunk ${inputChunk}, output ${outputSize}: output differs`);
    }
  }
  // The buffer is reused: a small one yields many pieces, never one piece larger than itself.
  assert.ok(scan(gz, gz.length, 1024).pieces >= Math.ceil(plain.length / 1024));
});

test('names every kind of broken stream', () => {
  const flipped = Buffer.from(gz);
  flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
  const badCrc = Buffer.from(gz);
  badCrc[badCrc.length - 6]! ^= 0x01;
  const cases: [string, Buffer, RegExp][] = [
    ['truncated body', gz.subarray(0, gz.length - 500), /unexpected end of file/],
    ['truncated trailer', gz.subarray(0, gz.length - 4), /unexpected end of file/],
    ['flipped byte', flipped, /invalid|incorrect/],
    ['wrong CRC', badCrc, /incorrect data check/],
    ['trailing garbage', Buffer.concat([gz, Buffer.from('garbage')]), /incorrect header check/],
    ['not gzip', Buffer.from('-- PostgreSQL database dump\n'), /incorrect header check/],
    ['empty', Buffer.alloc(0), /unexpected end of file/],
  ];
  for (const [name, input, expected] of cases) {
    for (const chunk of [4096, Math.max(1, input.length)]) {
      const r = scan(input, chunk);
      assert.ok(r.error, `${name} (chunk ${chunk}) passed`);
      assert.match(r.error!, expected, name);
    }
  }
});

test('concatenated gzip members decode as one stream, as gunzip does', () => {
  const r = scan(Buffer.concat([gzipSync('first\n'), gzipSync('second\n')]), 3);
  assert.is(r.error, undefined);
  assert.is(r.output.toString(), 'first\nsecond\n');
});

test.run();
