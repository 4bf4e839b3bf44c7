// The NAS side of a deployment that outlives its SSH session. `deploy-to-qnap --local --detach`
// starts the real run in a session of its own (setsid: no SIGHUP when the connection drops),
// its stderr appended to logs/deploy.log and its stdout to deploy/runs/<id>.out, hands it the age
// identity over a pipe (never a file or argv), records the run and returns at once. The run
// writes deploy/runs/<id>.result.json when it ends; `--follow <id>` prints the log from the run's
// start until then, and a last line with that result for the workstation.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeFileAtomic } from '../host/atomic-file.ts';
import { backupStamp } from '../store/backup-files.ts';
import { deployDirName } from './state.ts';
import { CliError, ExitCode, UsageError, errorText } from '../errors.ts';
import { ownerIsAlive, processStartTicks } from '../host/lock.ts';
import { Logger } from '../log.ts';

/** What the detaching wrapper records about the run it started. */
export interface RunRecord {
  runId: string;
  pid: number;
  startTicks: string | undefined;
  host: string;
  started: string;
  /** The run's flags (what it does: a deployment, --rollback). */
  command: string;
  logFile: string;
  /** Where the run's lines start in the log. */
  logOffset: number;
}

/** How a run ended: written by the run itself, or `died` when it is gone without writing it. */
export interface RunResult {
  runId: string;
  exitCode: number;
  error?: string;
  advice?: string;
  /** A run killed (SIGKILL, a power cut) before it could write its result. */
  died?: boolean;
  finished: string;
  /** What the run printed on stdout (its --json summary). */
  stdout: string;
}

/** The line that ends `--follow`'s output: this prefix, then the RunResult as JSON. */
export const resultMarker = '@planetarion-run-result ';

const runsDir = (dir: string) => join(dir, deployDirName, 'runs');
const runFile = (dir: string, runId: string, suffix: '.run.json' | '.result.json' | '.out') =>
  join(runsDir(dir), `${runId}${suffix}`);

/** Where a run's record is (the workstation reads it with `cat`). */
export const runRecordPath = (dir: string, runId: string) => runFile(dir, runId, '.run.json');

/** A run ID as the wrapper makes them; anything else is refused before it names a file. */
export function checkRunId(runId: string): string {
  if (!/^\d{8}_\d{6}-[0-9a-f]{6}$/.test(runId))
    throw new UsageError(
      `invalid run ID '${runId}': expected one like 20261130_150102-a1b2c3`,
      'deploy-to-qnap --status shows the last run.',
    );
  return runId;
}

/** The argv that starts this tool's deploy-to-qnap again: the launcher beside the executable (never execPath: that is the loader). */
function selfCommand(): string[] {
  const sea = process.getBuiltinModule?.('node:sea') as { isSea(): boolean } | undefined;
  if (sea?.isSea()) return [join(dirname(realpathSync(process.argv0)), 'planetarion'), 'deploy-to-qnap'];
  return [process.execPath, ...process.execArgv, process.argv[1]!, 'deploy-to-qnap'];
}

/** Flags back into argv (the run gets the wrapper's own flags, minus the ones named). */
export function argvOf(flags: Record<string, string | boolean | undefined>, without: string[]): string[] {
  return Object.entries(flags).flatMap(([name, value]) =>
    without.includes(name) || value === undefined || value === false
      ? []
      : value === true
        ? [`--${name}`]
        : [`--${name}`, value],
  );
}

/** Starts the run detached (see the top of this file) and returns its record; `stdin` goes to it over a pipe. */
export async function startDetachedRun(options: {
  dir: string;
  logFile: string;
  args: string[];
  stdin?: string;
}): Promise<RunRecord> {
  mkdirSync(runsDir(options.dir), { recursive: true, mode: 0o700 });
  const runId = `${backupStamp(new Date())}-${randomBytes(3).toString('hex')}`;
  // Opened first: a log past its size limit rotates now, so the run's own logger will not move it.
  const log = new Logger({ file: options.logFile, stderr: null });
  const logOffset = statSync(options.logFile, { throwIfNoEntry: false })?.size ?? 0;
  log.info(`Run ${runId}: deploy-to-qnap ${options.args.join(' ')}, detached from the SSH session`);
  const logFd = openSync(options.logFile, 'a', 0o600);
  const outFd = openSync(runFile(options.dir, runId, '.out'), 'w', 0o600);
  const [bin, ...pre] = selfCommand();
  const child = spawn(bin!, [...pre, ...options.args, '--run-id', runId], {
    detached: true,
    cwd: options.dir,
    stdio: [options.stdin === undefined ? 'ignore' : 'pipe', outFd, logFd],
  });
  closeSync(logFd);
  closeSync(outFd);
  await new Promise<void>((resolve, reject) => child.once('spawn', resolve).once('error', reject));
  if (options.stdin !== undefined)
    await new Promise<void>((resolve) => child.stdin!.end(options.stdin, () => resolve()));
  const record: RunRecord = {
    runId,
    pid: child.pid!,
    startTicks: processStartTicks(child.pid!),
    host: hostname(),
    started: new Date().toISOString(),
    command: options.args.join(' '),
    logFile: options.logFile,
    logOffset,
  };
  writeRunRecord(options.dir, record);
  child.unref();
  return record;
}

/** Where the ID of the last run started is kept: run IDs carry the NAS's clock, which may be set back. */
const latestFile = (dir: string) => join(runsDir(dir), 'latest');

/** Writes a run's record, and names it the latest run. */
export function writeRunRecord(dir: string, record: RunRecord): void {
  writeFileAtomic(runFile(dir, record.runId, '.run.json'), `${JSON.stringify(record, null, 2)}\n`);
  writeFileAtomic(latestFile(dir), `${record.runId}\n`);
}

/** Runs the body of a detached run and writes its result file, whatever the outcome. */
export async function recordRunOutcome(dir: string, runId: string, body: () => Promise<void>): Promise<void> {
  let outcome: Pick<RunResult, 'exitCode' | 'error' | 'advice'> = { exitCode: ExitCode.ok };
  try {
    await body();
  } catch (error) {
    outcome = {
      exitCode: error instanceof CliError ? error.exitCode : ExitCode.failed,
      error: errorText(error),
      ...(error instanceof CliError && error.advice ? { advice: error.advice } : {}),
    };
    throw error;
  } finally {
    const stdout = readFileSync(runFile(dir, runId, '.out'), { encoding: 'utf8', flag: 'r' });
    writeFileAtomic(
      runFile(dir, runId, '.result.json'),
      JSON.stringify({ runId, ...outcome, finished: new Date().toISOString(), stdout } satisfies RunResult, null, 2) +
        '\n',
    );
  }
}

/** A run's record; a CliError naming the run when there is none. */
export function readRunRecord(dir: string, runId: string): RunRecord {
  try {
    return JSON.parse(readFileSync(runFile(dir, checkRunId(runId), '.run.json'), 'utf8')) as RunRecord;
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new UsageError(
      `there is no deploy run '${runId}' in ${runsDir(dir)}`,
      'deploy-to-qnap --status shows the last run.',
    );
  }
}

/** How a run ended, or undefined while it runs. A run that is gone without a result died. */
export function runOutcome(dir: string, record: RunRecord): RunResult | undefined {
  const read = () => {
    try {
      return JSON.parse(readFileSync(runFile(dir, record.runId, '.result.json'), 'utf8')) as RunResult;
    } catch {
      return undefined;
    }
  };
  const result = read();
  if (result || (ownerIsAlive(record) && !isZombie(record.pid))) return result;
  // Read again: it may have written the file between the two looks.
  return (
    read() ?? {
      runId: record.runId,
      exitCode: ExitCode.failed,
      died: true,
      error: `the run (pid ${record.pid}) ended without recording a result: it was killed or the NAS restarted; the next deploy-to-qnap or backup run reconciles any half-done switch`,
      finished: new Date().toISOString(),
      stdout: '',
    }
  );
}

/** Whether a process has exited and waits to be reaped (an orphan whose init does not reap still answers kill -0). */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}

/**
 * The most recent run's record, if any: the one last started, whatever the clock said then
 * (after a clock set back, the newest run's ID sorts before older ones). Runs of versions that
 * kept no pointer are found by their IDs.
 */
export function latestRun(dir: string): RunRecord | undefined {
  try {
    const latest = checkRunId(readFileSync(latestFile(dir), 'utf8').trim());
    if (existsSync(runRecordPath(dir, latest))) return readRunRecord(dir, latest);
  } catch {
    // no pointer yet, or not a run ID: by the IDs below
  }
  let names: string[];
  try {
    names = readdirSync(runsDir(dir));
  } catch {
    return undefined;
  }
  const last = names
    .filter((n) => n.endsWith('.run.json'))
    .sort()
    .pop();
  return last ? readRunRecord(dir, last.slice(0, -'.run.json'.length)) : undefined;
}

/** Writes to a stream, waiting while it is full. */
function write(out: NodeJS.WritableStream, data: Buffer | string): Promise<void> {
  return new Promise((resolve) => (out.write(data) ? resolve() : out.once('drain', () => resolve())));
}

/**
 * Prints the run's log lines from `from` (default: the run's start) until it has ended, then the
 * result line; returns the result. Stops with the run, never stops it.
 */
export async function followRun(
  dir: string,
  runId: string,
  from: number | undefined,
  out: NodeJS.WritableStream,
): Promise<RunResult> {
  const record = readRunRecord(dir, runId);
  const file = await open(record.logFile, 'r');
  try {
    let position = from ?? record.logOffset;
    let endsLine = true;
    const buffer = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      // Looked at before reading: once it has ended, what is read next is the whole rest.
      const result = runOutcome(dir, record);
      for (;;) {
        const { bytesRead } = await file.read(buffer, 0, buffer.length, position);
        if (!bytesRead) break;
        position += bytesRead;
        endsLine = buffer[bytesRead - 1] === 0x0a;
        await write(out, buffer.subarray(0, bytesRead));
      }
      if (result) {
        await write(out, `${endsLine ? '' : '\n'}${resultMarker}${JSON.stringify(result)}\n`);
        return result;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } finally {
    await file.close();
  }
}
