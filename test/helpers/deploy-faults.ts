// What the deploy fault tests share: a `docker` wrapper that holds a rename, the checks that the
// writers run and that no row was lost, and processes killed with everything they started.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { startTool, waitFor, type ToolResult } from './cli.ts';
import { lockFileName } from '../../lib/host/lock.ts';
import { sqlIn, type TestNas } from './stack.ts';

export interface SlotJson {
  project: string;
  slotId: string;
  containers: Array<{ service: string; name: string }>;
}

/**
 * A `docker` for the NAS side that passes everything to the real one, except a rename whose new
 * name matches the hook file (`pause NAME` or `slow * SECONDS`): paused, it records its pid and
 * sleeps until killed; slowed, it waits, then renames.
 */
export function installDockerHook(n: TestNas): { path: string; hook: string } {
  const path = join(n.dir, 'docker-hook');
  const hook = join(n.dir, 'rename-hook');
  writeFileSync(
    path,
    `#!/bin/sh
if [ "$1" = rename ] && [ -f '${hook}' ]; then
  read mode target seconds < '${hook}'
  if [ "$target" = "$3" ] || [ "$target" = '*' ]; then
    if [ "$mode" = pause ]; then rm -f '${hook}'; echo $$ > '${hook}.paused'; exec sleep 600; fi
    echo "$3" >> '${hook}.slowed'; sleep "$seconds"
  fi
fi
exec docker "$@"
`,
    { mode: 0o755 },
  );
  return { path, hook };
}

/**
 * Makes the lock a killed run left behind an hour old, as it is when cron or the operator runs
 * next: a lock younger than freshLockMs counts as held whatever its pid (lib/host/lock.ts), and
 * on a fast machine the next command of a test comes within those seconds.
 */
export function ageKilledRunLock(n: TestNas): void {
  const lock = join(n.dir, lockFileName);
  const hourAgo = new Date(Date.now() - 3_600_000);
  if (existsSync(lock)) utimesSync(lock, hourAgo, hourAgo);
}

/** The test stack with a health check that tolerates a machine busy with other test runs. */
export const patient = (yaml: string) =>
  yaml
    .replace(
      '      retries: 2\n      start_period: 300s',
      '      timeout: 60s\n      retries: 30\n      start_period: 900s',
    )
    .replace(
      '  db:\n    image: planetarion-test-pg:latest\n',
      '  db:\n    image: planetarion-test-pg:latest\n    healthcheck:\n      test: ["CMD-SHELL", "pg_isready -q -h /var/run/postgresql -U planetarion_user -d planetarion"]\n      interval: 1s\n      timeout: 60s\n      retries: 30\n      start_period: 900s\n',
    );

/** Health timeouts for a test machine shared with other test runs, where a database can take minutes to start. */
export const slowMachine = ['--health-timeout', '900'];

export const stateOf = (n: TestNas) =>
  JSON.parse(readFileSync(join(n.dir, 'deploy/state.json'), 'utf8')) as {
    live: SlotJson;
    previous?: SlotJson;
    lastDeploy: Record<string, unknown>;
  };
export const liveWrites = (n: TestNas) => Number(sqlIn(n.container, 'SELECT count(*) FROM app_writes'));
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const dbOf = (slot: SlotJson) => slot.containers.find((c) => c.service === 'db')!.name;

/** The live database gains rows: its writers run. */
export async function writersRun(n: TestNas): Promise<void> {
  let before = -1;
  await waitFor(
    'the live writers to write',
    async () => {
      try {
        const now = liveWrites(n);
        if (before >= 0 && now > before) return true;
        before = now;
      } catch {
        // the database is still starting
      }
      await sleep(500);
      return false;
    },
    600_000,
    200,
  );
}

/** Every row the previous slot's database holds is in the live one (per writer, by origin). */
export async function nothingLost(n: TestNas, previous: SlotJson): Promise<void> {
  const old = dbOf(previous);
  execFileSync('docker', ['start', old]);
  try {
    let origins = '';
    await waitFor(
      `${old} to answer`,
      () => {
        try {
          origins = sqlIn(old, 'SELECT origin, count(*) FROM app_writes GROUP BY 1 ORDER BY 1');
          return true;
        } catch {
          return false;
        }
      },
      600_000,
      300,
    );
    const rows = origins.split('\n').map((l) => l.split('|'));
    assert.ok(rows.length > 0 && Number(rows[0]![1]) > 0, origins);
    for (const [origin, count] of rows)
      assert.is(
        sqlIn(n.container, `SELECT count(*) FROM app_writes WHERE origin = '${origin}'`),
        count,
        `rows of writer ${origin}`,
      );
  } finally {
    execFileSync('docker', ['stop', old]);
  }
}

/** Starts a command of the built executable in a process group of its own, so the test can kill it with everything it started. */
export function startGroup(
  command: string,
  args: string[],
  env: Record<string, string>,
  cwd?: string,
): { pid: number; done: Promise<ToolResult> } {
  const { child, done } = startTool(command, args, env, { cwd, detached: true });
  return { pid: child.pid!, done };
}

/** The pid of a child of `parent` whose command line contains `text`. */
export function childWith(parent: number, text: string): number | undefined {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text)) return Number(pid);
    } catch {
      // gone
    }
  }
  return undefined;
}

/** The deploy log's text written after `from` bytes. */
export const logSince = (n: TestNas, from: number) => {
  try {
    return readFileSync(join(n.dir, 'logs/deploy.log')).subarray(from).toString('utf8');
  } catch {
    return '';
  }
};
export const logSize = (n: TestNas) =>
  existsSync(join(n.dir, 'logs/deploy.log')) ? statSync(join(n.dir, 'logs/deploy.log')).size : 0;

/** A host-side writer: the tick numbers that committed, every error message it got, and its stop. */
export interface HostWriter {
  committed: () => number[];
  errors: () => string[];
  stop: () => void;
}

/**
 * A host-side writer like the game's ticker: a tick every 50 ms, each one transaction of `tick`
 * (SQL in which `$i` is the tick's number), through one `docker exec -i … psql` session held
 * open. A tick counts as committed when psql has echoed its number after the COMMIT. A session
 * that ends (the fence ends it, the server stops, the name moves to another container) ends on
 * its first error, which is recorded, and a new one starts 50 ms later; ticks it was sent but
 * did not acknowledge are never sent again (their numbers are not reused).
 */
export function startHostWriter(container: string, tick: string, everyMs = 50): HostWriter {
  const committed: number[] = [];
  const errors: string[] = [];
  let next = 0;
  let stopped = false;
  let session: ChildProcess | undefined;
  let timer: NodeJS.Timeout | undefined;
  const connect = () => {
    if (stopped) return;
    const child = spawn(
      'docker',
      [
        'exec',
        '-i',
        container,
        'psql',
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        '-U',
        'planetarion_user',
        '-d',
        'planetarion',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    session = child;
    let out = '';
    let err = '';
    child.stdin!.on('error', () => {});
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const lines = out.split('\n');
      out = lines.pop()!;
      for (const line of lines) if (/^ok \d+$/.test(line)) committed.push(Number(line.slice(3)));
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const send = () => {
      if (stopped || child.exitCode !== null || child.signalCode !== null) return;
      const i = ++next;
      // The tick's own `;` is optional (`;;` is an empty statement psql skips).
      child.stdin!.write(`BEGIN;\n${tick.replaceAll('$i', String(i))};\nCOMMIT;\n\\echo ok ${i}\n`);
      timer = setTimeout(send, everyMs);
    };
    child.on('close', (code) => {
      clearTimeout(timer);
      if (stopped) return;
      errors.push(`error after tick ${next} (exit ${code}): ${err.trim().replace(/\s+/g, ' ')}`);
      timer = setTimeout(connect, everyMs);
    });
    send();
  };
  connect();
  return {
    committed: () => [...committed],
    errors: () => [...errors],
    stop: () => {
      stopped = true;
      clearTimeout(timer);
      session?.kill('SIGKILL');
    },
  };
}

export const stopWriter = (writer: HostWriter) => writer.stop();

/** Runs a deployment (or any step) while the writer writes, and stops the writer whatever happens. */
export async function whileWriting<T>(writer: HostWriter, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } finally {
    stopWriter(writer);
  }
}
