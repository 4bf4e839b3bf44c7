// The engine's multiplexed stream and HTTP answers as lib/host/engine-exec.ts reads them: frames
// split at any byte across chunks, several in one chunk, an empty one; the status and the body
// of an answer; the engine's message in an error answer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Demultiplexer, engineMessage, splitAnswer } from '../lib/host/engine-exec.ts';

const frame = (stream: number, text: string) => {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
};

test('frames come out whole and in order, however the stream is cut', () => {
  const stream = Buffer.concat([
    frame(1, 'COPY players'),
    frame(2, 'pg_dump: warning'),
    frame(1, ''),
    frame(1, 'x'.repeat(70_000)),
  ]);
  for (const cut of [1, 3, 7, 8, 9, 13, 1000, stream.length]) {
    const got: [number, string][] = [];
    const demux = new Demultiplexer((s, payload) => got.push([s, payload.toString()]));
    for (let at = 0; at < stream.length; at += cut) demux.feed(stream.subarray(at, at + cut));
    assert.equal(got, [
      [1, 'COPY players'],
      [2, 'pg_dump: warning'],
      [1, ''],
      [1, 'x'.repeat(70_000)],
    ]);
    assert.is(demux.leftover, 0);
  }
  const demux = new Demultiplexer(() => {});
  demux.feed(frame(1, 'cut short').subarray(0, 12));
  assert.is(demux.leftover, 12);
});

test('an answer: its status and what follows the header; not HTTP, or no end of header, is none', () => {
  const answer = splitAnswer(
    Buffer.from('HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n\u0001abc'),
  );
  assert.is(answer?.status, 101);
  assert.is(answer?.body.toString(), '\u0001abc');
  assert.is(splitAnswer(Buffer.from('HTTP/1.0 201 Created\r\n\r\n{"Id":"ab"}'))?.status, 201);
  assert.is(splitAnswer(Buffer.from('HTTP/1.1 200 OK\r\nServer: Docker')), undefined);
  assert.is(splitAnswer(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n')), undefined);
});

test("the engine's message: the JSON message, else the text, else 'no answer'", () => {
  assert.is(engineMessage(Buffer.from('{"message":"No such container: db"}\n')), 'No such container: db');
  assert.is(engineMessage(Buffer.from('page not found\n')), 'page not found');
  assert.is(engineMessage(Buffer.from('')), 'no answer');
});

test.run();
