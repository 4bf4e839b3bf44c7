// The files of a detached run (lib/deploy/detach.ts), with real processes and files: the result a run
// records, and what --follow prints for a run that ends, and for one that is killed.
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  argvOf,
  checkRunId,
  followRun,
  latestRun,
  recordRunOutcome,
  resultMarker,
  type RunRecord,
  type RunResult,
  writeRunRecord,
} from '../lib/deploy/detach.ts';
import { CliError, ExitCode } from '../lib/errors.ts';
import { processStartTicks } from '../lib/host/lock.ts';
import { TempDirs } from './helpers/tmp.ts';

const temps = new TempDirs('planetarion-runs-');
const runId = '20261130_150102-a1b2c3';

/** A run record in a fresh dir, for a process that runs `sleep`; returns the dir, record and the process. */
function fakeRun(logLines: string) {
  const dir = temps.make();
  mkdirSync(join(dir, 'deploy/runs'), { recursive: true });
  const logFile = join(dir, 'deploy.log');
  writeFileSync(logFile, 'an older run\n');
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  const record: RunRecord = {
    runId,
    pid: child.pid!,
    startTicks: processStartTicks(child.pid!),
    host: hostname(),
    started: new Date().toISOString(),
    command: '--local',
    logFile,
    logOffset: 'an older run\n'.length,
  };
  writeFileSync(join(dir, `deploy/runs/${runId}.run.json`), JSON.stringify(record));
  writeFileSync(join(dir, `deploy/runs/${runId}.out`), '');
  appendFileSync(logFile, logLines);
  return { dir, record, child };
}

/** Everything followRun writes, once it returns. */
async function follow(dir: string, from?: number): Promise<{ text: string; result: RunResult }> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const result = await followRun(dir, runId, from, out);
  return { text, result };
}

const runs = suite('detached runs');

runs(
  'a run records its exit code, error and stdout; --follow prints its log from its start, then the result line',
  async () => {
    const { dir, child } = fakeRun('line one\n');
    try {
      const following = follow(dir);
      await recordRunOutcome(dir, runId, async () => {
        appendFileSync(join(dir, 'deploy.log'), 'line two\n');
        writeFileSync(join(dir, `deploy/runs/${runId}.out`), '{"ok":false}\n');
        throw new CliError('the new slot did not become healthy', { advice: 'See the log.' });
      }).catch((error: unknown) => assert.instance(error, CliError));
      const { text, result } = await following;
      assert.is(text.split(resultMarker)[0], 'line one\nline two\n');
      assert.equal(
        [result.exitCode, result.error, result.advice, result.stdout],
        [ExitCode.failed, 'the new slot did not become healthy', 'See the log.', '{"ok":false}\n'],
      );
      assert.equal(JSON.parse(text.split(resultMarker)[1]!), result);
      // From an offset: only what came after it.
      assert.is((await follow(dir, 'an older run\nline one\n'.length)).text.split(resultMarker)[0], 'line two\n');
    } finally {
      child.kill('SIGKILL');
    }
  },
);

runs('a run killed before it wrote a result: --follow ends and says it died', async () => {
  const { dir, child } = fakeRun('stopping the live writers\n');
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  const { text, result } = await follow(dir);
  assert.ok(text.startsWith('stopping the live writers\n'));
  assert.is(result.died, true);
  assert.is(result.exitCode, 1);
  assert.match(result.error!, /ended without recording a result/);
});

runs('the latest run is the one last started, also after the clock was set back', () => {
  const dir = temps.make();
  mkdirSync(join(dir, 'deploy/runs'), { recursive: true });
  assert.is(latestRun(dir), undefined);
  const record = (id: string): RunRecord => ({
    runId: id,
    pid: process.pid,
    startTicks: undefined,
    host: hostname(),
    started: new Date().toISOString(),
    command: '--local',
    logFile: join(dir, 'deploy.log'),
    logOffset: 0,
  });
  writeRunRecord(dir, record('20261130_150102-a1b2c3'));
  assert.is(latestRun(dir)?.runId, '20261130_150102-a1b2c3');
  // The NAS clock was a day ahead and is put right: the next run's ID sorts first.
  writeRunRecord(dir, record('20261129_160000-d4e5f6'));
  assert.is(latestRun(dir)?.runId, '20261129_160000-d4e5f6');
  // A pointer that names no record (or is not a run ID) falls back to the IDs.
  writeFileSync(join(dir, 'deploy/runs/latest'), '../../etc/passwd\n');
  assert.is(latestRun(dir)?.runId, '20261130_150102-a1b2c3');
});

runs('run IDs and argv', () => {
  assert.is(checkRunId(runId), runId);
  assert.throws(() => checkRunId('../../etc/passwd'), /invalid run ID/);
  assert.equal(
    argvOf({ local: true, detach: true, dir: '/share/p', json: false, 'health-timeout': '60' }, ['detach']),
    ['--local', '--dir', '/share/p', '--health-timeout', '60'],
  );
});

runs.after(() => temps.removeAll());
runs.run();
