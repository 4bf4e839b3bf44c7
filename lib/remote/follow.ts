// The workstation side of a detached NAS run (deploy/detach.ts): start it over SSH, then follow
// its log. A dropped connection is followed again from the last whole line received, a bounded
// number of times; after that the workstation says how to follow it, and the NAS side goes on.
// The outcome is the run's result line, never the exit status of an ssh process.
import { Writable } from 'node:stream';
import { checkRunId, resultMarker, runRecordPath, type RunRecord, type RunResult } from '../deploy/detach.ts';
import { CliError, ExitCode, errorText } from '../errors.ts';
import type { Ssh } from './ssh.ts';

export interface FollowOptions {
  say: (line: string) => void;
  /** Print the run's stdout (its --json summary) on ours. */
  json: boolean;
  /** Reconnections after a lost connection before giving up following (default 5). */
  reconnects?: number;
  /** First wait before reconnecting; doubles each time (default 2000 ms). */
  backoffMs?: number;
}

/** Passes whole log lines on to `target` and counts their bytes; keeps the result line. */
class LogRelay extends Writable {
  bytes = 0;
  result: RunResult | undefined;
  private pending = Buffer.alloc(0);

  constructor(private readonly target: NodeJS.WritableStream) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    for (let end = this.pending.indexOf(0x0a); end >= 0; end = this.pending.indexOf(0x0a)) {
      const line = this.pending.subarray(0, end + 1);
      this.pending = this.pending.subarray(end + 1);
      const text = line.toString('utf8');
      if (text.startsWith(resultMarker)) this.result = JSON.parse(text.slice(resultMarker.length)) as RunResult;
      else if (!this.result) {
        this.target.write(line);
        this.bytes += line.length;
      }
    }
    done();
  }
}

const exitCodeOf = (code: number) => (code === ExitCode.usage || code === ExitCode.locked ? code : ExitCode.failed);

/** Starts the NAS-side run detached (`--detach`), then follows it; throws when it failed, with its exit code. */
export async function runDetachedOnNas(
  ssh: Ssh,
  dir: string,
  args: string[],
  options: FollowOptions & { stdin?: string },
): Promise<void> {
  const started = await ssh.run(
    [`${dir}/deploy-to-qnap`, '--local', '--dir', dir, '--detach', ...args],
    options.stdin === undefined ? {} : { input: options.stdin },
  );
  if (started.exitCode !== 0) {
    const detail = started.stderr.trim().split('\n').slice(-3).join('\n');
    throw new CliError(`starting the run on the NAS failed (exit ${started.exitCode})${detail ? `: ${detail}` : ''}`, {
      exitCode: exitCodeOf(started.exitCode),
    });
  }
  const record = JSON.parse(started.stdout) as RunRecord;
  options.say(
    `Running on the NAS as run ${record.runId} (pid ${record.pid}), detached from this SSH session: losing the connection does not stop it. Its log there: ${record.logFile}`,
  );
  await followRemoteRun(ssh, dir, record, record.logOffset, options);
}

/** The record of a run on the NAS (for `deploy-to-qnap --follow ID` on the workstation). */
export async function remoteRunRecord(ssh: Ssh, dir: string, runId: string): Promise<RunRecord> {
  const found = await ssh.run(['cat', runRecordPath(dir, checkRunId(runId))]);
  if (found.exitCode !== 0)
    throw new CliError(`the NAS has no deploy run '${runId}' in ${dir}`, {
      exitCode: ExitCode.usage,
      advice: 'deploy-to-qnap --status shows the last run.',
    });
  return JSON.parse(found.stdout) as RunRecord;
}

/** Follows a run's log from `from` until its result line; reconnects after a lost connection. */
export async function followRemoteRun(
  ssh: Ssh,
  dir: string,
  record: RunRecord,
  from: number,
  options: FollowOptions,
): Promise<void> {
  const reconnects = options.reconnects ?? 5;
  let offset = from;
  for (let lost = 0; ; lost++) {
    const relay = new LogRelay(process.stderr);
    let why: string;
    try {
      const code = await ssh.stream(
        [`${dir}/deploy-to-qnap`, '--local', '--dir', dir, '--follow', record.runId, '--from', String(offset)],
        { stdout: relay },
      );
      why = `ssh exit ${code}`;
      // The follower itself failed (it said why on stderr): following again would fail the same way.
      if (!relay.result && code > 0 && code < 126)
        throw new CliError(`following run ${record.runId} on the NAS failed (exit ${code})`, {
          advice: `Its log there: ${record.logFile}`,
        });
    } catch (error) {
      if (error instanceof CliError && /^following run/.test(error.message)) throw error;
      why = errorText(error);
    }
    offset += relay.bytes;
    if (relay.result) return report(relay.result, record, options);
    const how = `Follow it again with 'deploy-to-qnap --follow ${record.runId}', or see 'deploy-to-qnap --status'; its log on the NAS is ${record.logFile}.`;
    if (lost >= reconnects)
      throw new CliError(
        `lost the connection to the NAS while following run ${record.runId} (${why}); the run goes on there`,
        { advice: how },
      );
    const delay = (options.backoffMs ?? 2000) * 2 ** lost;
    options.say(
      `Lost the connection to the NAS (${why}); the run goes on there. Reconnecting in ${(delay / 1000).toFixed(0)} s (${lost + 1} of ${reconnects}). ${how}`,
    );
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

/** The run's outcome on the workstation: its --json summary, and its exit code. */
function report(result: RunResult, record: RunRecord, options: FollowOptions): void {
  if (options.json && result.stdout) process.stdout.write(result.stdout);
  if (result.exitCode === 0) return;
  throw new CliError(
    `the run on the NAS ${result.died ? 'died' : `failed (exit ${result.exitCode})`}: ${result.error ?? 'see its log'}`,
    {
      exitCode: exitCodeOf(result.exitCode),
      advice: `${result.advice ? `${result.advice} ` : ''}Its log on the NAS: ${record.logFile}`,
    },
  );
}
