// `docker exec -i` over the engine's socket (lib/host/engine-exec.ts) against a real container:
// the same bytes, exit status and stderr as the docker CLI's exec; input with its end; output
// into a file or a pipe; the engine's refusals worded as the CLI words them; kill(); a full disk.
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type EngineExec, engineExec } from '../lib/host/engine-exec.ts';
import { defaultEngineSocket } from '../lib/host/engine-socket.ts';
import { removeDb, runTestContainer, scratchName } from './helpers/db.ts';

const running = scratchName('pb-engine-exec');
const stopped = scratchName('pb-engine-exec-stopped');
const work = mkdtempSync(join(tmpdir(), 'planetarion-engine-exec-'));
let ready = false;

/** The exec's end: exit status, signal, and all it wrote to stderr. */
async function finished(exec: EngineExec): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  let stderr = '';
  exec.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const [code, signal] = (await once(exec, 'close')) as [number | null, string | null];
  return { code, signal, stderr };
}

const start = (argv: string[], stdout: number | 'pipe', container = running) =>
  engineExec({ socket: defaultEngineSocket, container, argv, env: ['PLANETARION_X=a b'], stdout });

const exec = suite('engine exec');

exec('setup: a running and a stopped container', () => {
  runTestContainer(running, ['sleep', 'infinity']);
  runTestContainer(stopped, ['true']);
  execFileSync('docker', ['wait', stopped]);
  ready = true;
});

exec(
  'output into a file: the same bytes as the CLI writes, the exit status, stderr apart, the environment',
  async () => {
    assert.ok(ready, 'setup failed');
    // Some megabytes in many frames, a message on stderr in the middle, and a status of its own.
    const script = 'seq 1 400000; echo "env=$PLANETARION_X" >&2; seq 400001 800000; exit 3';
    const cli = spawnSync('docker', ['exec', running, 'sh', '-c', script], { maxBuffer: 64 * 1024 * 1024 });
    const path = join(work, 'out');
    const fd = openSync(path, 'wx', 0o600);
    const result = await finished(start(['sh', '-c', script], fd));
    closeSync(fd);
    assert.is(result.code, cli.status);
    assert.is(result.code, 3);
    assert.is(result.stderr, 'env=a b\n');
    const bytes = readFileSync(path);
    assert.ok(bytes.length > 5_000_000, `only ${bytes.length} bytes`);
    assert.ok(bytes.equals(cli.stdout), 'the file differs from what the CLI printed');
  },
);

exec('input and its end reach the exec; output through a pipe', async () => {
  assert.ok(ready, 'setup failed');
  // `cat` ends only when its input does: the half-close is the end of input.
  const child = start(['sh', '-c', 'cat; echo done'], 'pipe');
  const chunks: Buffer[] = [];
  child.stdout!.on('data', (chunk: Buffer) => chunks.push(chunk));
  const result = finished(child);
  child.stdin.write('first line\n');
  child.stdin.end("'; DROP TABLE players; --\n");
  const { code } = await result;
  assert.is(code, 0);
  assert.is(Buffer.concat(chunks).toString(), "first line\n'; DROP TABLE players; --\ndone\n");
});

exec("the engine's refusals come as the CLI words them, with status 1", async () => {
  assert.ok(ready, 'setup failed');
  const missing = scratchName('pb-engine-exec-missing');
  for (const [container, expected] of [
    [missing, /^Error response from daemon: No such container: /],
    [stopped, /^Error response from daemon: .*is not running/i],
  ] as const) {
    const result = await finished(start(['true'], 'pipe', container));
    assert.is(result.code, 1);
    assert.match(result.stderr, expected);
    assert.is(spawnSync('docker', ['exec', container, 'true']).status, 1, 'the CLI');
  }
});

/** Processes in the running container whose command line holds `marker`. */
const processesWith = (marker: string) =>
  execFileSync('docker', ['top', running, '-eo', 'pid,args'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes(marker));

/** Waits until no process in the running container holds `marker`, at most 10 s. */
async function gone(marker: string): Promise<void> {
  for (const started = Date.now(); processesWith(marker).length; await new Promise((r) => setTimeout(r, 100)))
    if (Date.now() - started > 10_000) assert.unreachable(`still running: ${processesWith(marker).join('; ')}`);
}

exec(
  'kill() ends it at once, as a killed child (no status, SIGKILL), and its input ends in the container',
  async () => {
    assert.ok(ready, 'setup failed');
    const marker = `planetarion-kill-${process.pid}`;
    // Runs until its input ends: only the connection's end can stop it.
    const child = start(['sh', '-c', 'echo up >&2; cat > /dev/null', marker], 'pipe');
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const result = once(child, 'close');
    for (const started = Date.now(); !stderr.includes('up'); await new Promise((r) => setTimeout(r, 20)))
      if (Date.now() - started > 10_000) assert.unreachable('the exec did not start');
    assert.is(processesWith(marker).length, 1, 'the exec is not running in the container');
    const killed = Date.now();
    assert.ok(child.kill());
    assert.equal(await result, [null, 'SIGKILL']);
    assert.ok(Date.now() - killed < 1000);
    assert.not.ok(child.kill(), 'a second kill');
    await gone(marker);
  },
);

exec('killed from a listener in the middle of a chunk of frames: nothing more is passed on, no error', async () => {
  assert.ok(ready, 'setup failed');
  for (const stdout of ['pipe', 'file'] as const) {
    // Thousands of small frames on both streams: read faster than they come only at first.
    const fd = stdout === 'file' ? openSync(join(work, `chunked-${Date.now()}`), 'wx', 0o600) : undefined;
    const child = start(
      ['sh', '-c', 'for i in $(seq 1 5000); do echo "err $i" >&2; echo "out $i"; done'],
      fd ?? 'pipe',
    );
    child.stdout?.resume();
    let lines = 0;
    let atKill: number | undefined;
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      lines += text.split('\n').length - 1;
      // As the dump does when pg_dump's exit line says it failed: here, well into the stream.
      if (lines >= 2000 && atKill === undefined) {
        atKill = lines;
        child.kill();
      }
    });
    const [code, signal] = (await once(child, 'close')) as [number | null, string | null];
    if (fd !== undefined) closeSync(fd);
    assert.equal([code, signal], [null, 'SIGKILL'], stdout);
    assert.is(lines, atKill, `lines came after the kill (${stdout})`);
  }
});

exec('a full disk: the write error on stderr as the CLI reports it, status 1, and the exec cut off', async () => {
  assert.ok(ready, 'setup failed');
  const small = join(work, 'small');
  execFileSync('mkdir', ['-m', '0700', small]);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', small]);
  const marker = `planetarion-full-${process.pid}`;
  try {
    const fd = openSync(join(small, 'out'), 'wx', 0o600);
    const result = await finished(start(['sh', '-c', 'seq 1 100000000', marker], fd));
    closeSync(fd);
    assert.is(result.code, 1);
    assert.match(result.stderr, /^write \/dev\/stdout: ENOSPC: no space left on device/);
    // seq to a hundred million takes minutes: it ended with the connection.
    await gone(marker);
  } finally {
    execFileSync('umount', [small]);
  }
});

exec.after(async () => {
  await removeDb(running);
  await removeDb(stopped);
  rmSync(work, { recursive: true, force: true });
});

exec.run();
