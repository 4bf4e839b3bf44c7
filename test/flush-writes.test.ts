// flushWrites runs the host's sync before a deployment's freeze: it reports what it wrote, and a
// sync that hangs (a dead network mount) or fails never holds up or fails the deployment.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dirtyBytes, flushWrites } from '../lib/host/flush-writes.ts';
import { Logger } from '../lib/log.ts';

/** A logger whose lines are collected. */
function collecting() {
  const stderr = new PassThrough();
  let text = '';
  stderr.on('data', (d: Buffer) => (text += d.toString()));
  return { log: new Logger({ stderr }), text: () => text };
}

/** An environment whose PATH finds a `sync` stand-in first. */
function withSync(body: string) {
  const bin = mkdtempSync(join(tmpdir(), 'pb-sync-'));
  writeFileSync(join(bin, 'sync'), `#!/bin/sh\n${body}\n`);
  chmodSync(join(bin, 'sync'), 0o755);
  return { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, bin };
}

test('dirtyBytes reads Dirty from /proc/meminfo text; none without the line', () => {
  assert.is(dirtyBytes('MemTotal:  100 kB\nDirty:             819536 kB\nWriteback: 0 kB\n'), 819536 * 1024);
  assert.is(dirtyBytes('MemTotal: 100 kB\n'), undefined);
  assert.type(dirtyBytes(), 'number');
});

test("the host's sync: one line saying what was written, in how long", async () => {
  const { log, text } = collecting();
  await flushWrites(log);
  assert.match(
    text(),
    /Wrote the dirty page cache to disk before the freeze \(\d+ MB\) in \d+\.\d s, while the game runs/,
  );
});

test('a sync that hangs is left after the timeout; one that fails only warns', async () => {
  const hung = withSync('sleep 5');
  const failing = withSync('exit 1');
  try {
    const slow = collecting();
    const started = Date.now();
    await flushWrites(slow.log, { timeoutMs: 300, env: hung.env });
    assert.ok(Date.now() - started < 2_000, 'it waited for the hung sync');
    assert.match(slow.text(), /sync did not finish within 0\.\d s; the freeze may take longer/);
    const bad = collecting();
    await flushWrites(bad.log, { env: failing.env });
    assert.match(bad.text(), /sync failed \(exit 1\); the freeze may take longer/);
  } finally {
    for (const { bin } of [hung, failing]) rmSync(bin, { recursive: true, force: true });
  }
});

test('an abort during a hung sync rejects at once with the reason, and leaves the sync behind', async () => {
  const hung = withSync('sleep 5');
  try {
    const { log, text } = collecting();
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(new Error('SIGTERM: deployment aborted')), 200);
    const outcome = await flushWrites(log, { env: hung.env, signal: controller.signal }).then(
      () => 'resolved',
      (error: Error) => error.message,
    );
    assert.is(outcome, 'SIGTERM: deployment aborted');
    assert.ok(Date.now() - started < 2_000, 'the abort waited for the hung sync');
    assert.not.match(text(), /Wrote the dirty page cache/);
    const already = await flushWrites(log, { env: hung.env, signal: controller.signal }).then(
      () => 'resolved',
      (error: Error) => error.message,
    );
    assert.is(already, 'SIGTERM: deployment aborted', 'an already aborted deployment starts no sync');
  } finally {
    rmSync(hung.bin, { recursive: true, force: true });
  }
});

test.run();
