import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { acquireLock, LockHeldError, lockFileName, ownerIsAlive, processStartTicks } from '../lib/lock.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const holder = join(import.meta.dirname, 'fixtures/hold-lock.ts');
const tsx = join(import.meta.dirname, '../node_modules/.bin/tsx');

interface Run { code: number | null; stdout: string; stderr: string }
function run(dir: string, ms: number): { done: Promise<Run>; pid: number; kill(sig: NodeJS.Signals): void } {
  const child = spawn(tsx, [holder, dir, String(ms)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { done, pid: child.pid!, kill: (sig) => child.kill(sig) };
}

const acquire = suite('acquireLock');
let dir = '';
acquire.before.each(() => {
  dir = makeTempDir();
});
acquire.after.each(() => removeTempDir(dir));

acquire('takes a free lock, records the owner with mode 0600, and releases it', () => {
  const lock = acquireLock(dir, 'backup-database');
  const path = join(dir, lockFileName);
  const owner = JSON.parse(readFileSync(path, 'utf8'));
  assert.is(owner.pid, process.pid);
  assert.is(owner.command, 'backup-database');
  assert.is(owner.startTicks, processStartTicks(process.pid));
  assert.is(statSync(path).mode & 0o777, 0o600);
  lock.release();
  assert.not.ok(existsSync(path));
});

acquire('refuses a lock held by a live process with LockHeldError (exit 75) naming its pid', () => {
  const lock = acquireLock(dir, 'first');
  try {
    acquireLock(dir, 'second');
    assert.unreachable('second acquire should fail');
  } catch (error) {
    assert.instance(error, LockHeldError);
    assert.is((error as LockHeldError).exitCode, 75);
    assert.match((error as Error).message, `pid ${process.pid}`);
  } finally {
    lock.release();
  }
});

acquire('takes over a lock whose pid is dead, and says whose it was', () => {
  writeFileSync(join(dir, lockFileName), JSON.stringify({ pid: 2 ** 22 + 12345, startTicks: '1', command: 'old', host: hostname(), started: 'x' }));
  const lock = acquireLock(dir, 'new');
  assert.is(lock.tookOverFrom?.command, 'old');
  lock.release();
});

acquire('takes over a lock whose pid was reused by another process (start time differs)', () => {
  const fake = { pid: 1, startTicks: 'not-the-real-start', command: 'old', host: hostname(), started: 'x' };
  assert.not.ok(ownerIsAlive(fake));
  writeFileSync(join(dir, lockFileName), JSON.stringify(fake));
  const lock = acquireLock(dir, 'new');
  assert.is(lock.tookOverFrom?.pid, 1);
  lock.release();
});

acquire('release never removes a lock that is no longer ours', () => {
  const lock = acquireLock(dir, 'mine');
  writeFileSync(join(dir, lockFileName), JSON.stringify({ pid: 999999, command: 'theirs' }));
  lock.release();
  assert.ok(existsSync(join(dir, lockFileName)));
});

acquire.run();

const race = suite('lock between processes');
race.before.each(() => {
  dir = makeTempDir();
});
race.after.each(() => removeTempDir(dir));

race('two processes racing: exactly one gets it, the other exits 75 naming the holder pid', async () => {
  const a = run(dir, 1500);
  const b = run(dir, 1500);
  const results = await Promise.all([a.done, b.done]);
  const winners = results.filter((r) => r.code === 0);
  const losers = results.filter((r) => r.code === 75);
  assert.is(winners.length, 1, JSON.stringify(results));
  assert.is(losers.length, 1, JSON.stringify(results));
  const holderPid = /locked (\d+)/.exec(winners[0]!.stdout)![1];
  assert.match(losers[0]!.stderr, `pid ${holderPid}`);
});

race('a lock left by a killed process (SIGKILL) is taken over by the next run', async () => {
  const first = run(dir, 60_000);
  for (let i = 0; i < 100 && !existsSync(join(dir, lockFileName)); i++) await new Promise((r) => setTimeout(r, 100));
  // tsx runs the script in a child node process: the lock's pid is that process, not first.pid.
  const holderPid = JSON.parse(readFileSync(join(dir, lockFileName), 'utf8')).pid as number;
  process.kill(holderPid, 'SIGKILL');
  await first.done;
  assert.ok(existsSync(join(dir, lockFileName)), 'a SIGKILLed owner cannot clean up: the lock stays');
  const second = await run(dir, 10).done;
  assert.is(second.code, 0, second.stderr);
  assert.match(second.stdout, `took-over ${holderPid}`);
});

race.run();
