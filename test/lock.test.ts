import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  acquireLock,
  freshLockMs,
  LockHeldError,
  lockFileName,
  ownerIsAlive,
  processStartTicks,
} from '../lib/host/lock.ts';
import { startProcess, type ToolResult } from './helpers/cli.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const holder = join(import.meta.dirname, 'fixtures/hold-lock.ts');
const tsx = join(import.meta.dirname, '../node_modules/.bin/tsx');

function run(
  dir: string,
  ms: number,
  startSignal?: string,
): { done: Promise<ToolResult>; pid: number; kill(sig: NodeJS.Signals): void } {
  const { child, done } = startProcess(tsx, [holder, dir, String(ms), ...(startSignal ? [startSignal] : [])]);
  return { done, pid: child.pid!, kill: (sig) => child.kill(sig) };
}

/** Writes a lock file as an earlier run would have, dated `ageMs` ago. */
function plantLock(dir: string, content: string, ageMs = 60_000): string {
  const path = join(dir, lockFileName);
  writeFileSync(path, content);
  const when = new Date(Date.now() - ageMs);
  utimesSync(path, when, when);
  return path;
}

/** The LockHeldError acquireLock throws, or a failure when it takes the lock. */
function heldError(dir: string): LockHeldError {
  try {
    acquireLock(dir, 'second').release();
  } catch (error) {
    assert.instance(error, LockHeldError);
    return error as LockHeldError;
  }
  return assert.unreachable('the lock should be held') as never;
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
  plantLock(
    dir,
    JSON.stringify({ pid: 2 ** 22 + 12345, startTicks: '1', command: 'old', host: hostname(), started: 'x' }),
  );
  const lock = acquireLock(dir, 'new');
  assert.is(lock.tookOverFrom?.command, 'old');
  lock.release();
});

acquire('takes over a lock whose pid was reused by another process (start time differs)', () => {
  const fake = { pid: 1, startTicks: 'not-the-real-start', command: 'old', host: hostname(), started: 'x' };
  assert.not.ok(ownerIsAlive(fake));
  plantLock(dir, JSON.stringify(fake));
  const lock = acquireLock(dir, 'new');
  assert.is(lock.tookOverFrom?.pid, 1);
  lock.release();
});

acquire('an empty or unreadable lock file counts as held, exit 75 with the fix, and stays', () => {
  for (const [content, detail] of [
    ['', /is empty/],
    ['{"pid":', /does not hold an owner record/],
    ['garbage\n', /does not hold an owner record/],
  ] as const) {
    const path = plantLock(dir, content, 3_600_000);
    const error = heldError(dir);
    assert.is(error.exitCode, 75);
    assert.match(error.message, detail);
    assert.match(error.advice!, `rm ${path}`);
    assert.is(readFileSync(path, 'utf8'), content, 'the lock file was not touched');
  }
});

acquire('a seconds-old lock counts as held even when its pid is gone; an older one is taken over', () => {
  const dead = JSON.stringify({
    pid: 2 ** 22 + 12345,
    startTicks: '1',
    command: 'old',
    host: hostname(),
    started: 'x',
  });
  plantLock(dir, dead, 1_000);
  assert.match(heldError(dir).message, /pid 4206649/);
  plantLock(dir, dead, freshLockMs + 1_000);
  const lock = acquireLock(dir, 'new');
  assert.is(lock.tookOverFrom?.command, 'old');
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

/** Starts `count` holders that try the lock at the same moment (once every one of them is ready). */
async function raceHolders(count: number, ms: number): Promise<ToolResult[]> {
  const go = join(dir, 'go');
  const runs = Array.from({ length: count }, () => run(dir, ms, go));
  for (let i = 0; i < 1200 && readdirSync(dir).filter((f) => f.startsWith('go.ready-')).length < count; i++)
    await new Promise((r) => setTimeout(r, 50));
  writeFileSync(go, '');
  return Promise.all(runs.map((r) => r.done));
}

race('two processes racing: exactly one gets it, the other exits 75 naming the holder pid', async () => {
  const results = await raceHolders(2, 1500);
  const winners = results.filter((r) => r.code === 0);
  const losers = results.filter((r) => r.code === 75);
  assert.is(winners.length, 1, JSON.stringify(results));
  assert.is(losers.length, 1, JSON.stringify(results));
  const holderPid = /locked (\d+)/.exec(winners[0]!.stdout)![1];
  assert.match(losers[0]!.stderr, `pid ${holderPid}`);
});

race(
  'eight processes racing through the moment the lock is written: exactly one wins, every loser names it',
  async () => {
    const results = await raceHolders(8, 2500);
    const winners = results.filter((r) => r.code === 0);
    assert.is(winners.length, 1, JSON.stringify(results));
    const holderPid = /locked (\d+)/.exec(winners[0]!.stdout)![1];
    for (const loser of results.filter((r) => r.code !== 0)) {
      assert.is(loser.code, 75, loser.stderr);
      assert.match(loser.stderr, `pid ${holderPid}`);
    }
  },
);

race('a lock left by a killed process (SIGKILL) is taken over by the next run', async () => {
  const first = run(dir, 60_000);
  for (let i = 0; i < 100 && !existsSync(join(dir, lockFileName)); i++) await new Promise((r) => setTimeout(r, 100));
  // tsx runs the script in a child node process: the lock's pid is that process, not first.pid.
  const holderPid = JSON.parse(readFileSync(join(dir, lockFileName), 'utf8')).pid as number;
  process.kill(holderPid, 'SIGKILL');
  await first.done;
  assert.ok(existsSync(join(dir, lockFileName)), 'a SIGKILLed owner cannot clean up: the lock stays');
  const later = new Date(Date.now() - 60_000); // the next cron run comes hours later
  utimesSync(join(dir, lockFileName), later, later);
  const second = await run(dir, 10).done;
  assert.is(second.code, 0, second.stderr);
  assert.match(second.stdout, `took-over ${holderPid}`);
});

race.run();
