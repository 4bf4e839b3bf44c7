// followFile against a real writer process: every byte, in order, while the file grows in
// bursts with pauses longer than the poll; it ends only once the writer has exited, and also
// when the writer fails.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { followFile } from '../lib/host/follow-file.ts';
import { TempDirs } from './helpers/tmp.ts';

const temp = new TempDirs('planetarion-follow-');

async function collect(path: string, writerDone: Promise<unknown>, chunkSize?: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  // Copies: each chunk is a view of the buffer the next read reuses.
  for await (const chunk of followFile(path, writerDone, { chunkSize, pollMs: 5 })) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

test('reads a file while a process writes it in bursts, and stops after the writer exits', async () => {
  const path = join(temp.make(), 'growing');
  writeFileSync(path, '');
  // 30 bursts of 100 KB with 30 ms pauses: the reader catches up and waits many times.
  const writer = spawn(
    'sh',
    ['-c', 'for i in $(seq 1 30); do head -c 100000 /dev/urandom; sleep 0.03; done >> "$1"', 'sh', path],
    { stdio: 'ignore' },
  );
  const exited = once(writer, 'close');
  const read = await collect(path, exited);
  assert.is(read.length, 3_000_000);
  assert.ok(read.equals(readFileSync(path)), 'the bytes read differ from the file');
  // Small chunks over the finished file: the same bytes.
  assert.ok((await collect(path, Promise.resolve(), 4096)).equals(readFileSync(path)));
});

test('a writer that fails still ends the reading, after what it wrote', async () => {
  const path = join(temp.make(), 'partial');
  writeFileSync(path, 'partial output');
  const read = await collect(path, Promise.reject(new Error('writer failed')));
  assert.is(read.toString(), 'partial output');
});

test.after(() => temp.removeAll());
test.run();
