// Test helpers: throwaway PostgreSQL 15 containers (planetarion-test-pg image), SQL through
// `docker exec ... psql`, a deterministic Planetarion-like seed and a background writer.
// Every container runs with `--network none`: the server listens on its unix socket only.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { PsqlSession } from '../../lib/host/psql-session.ts';

/** The PostgreSQL 15 test image (built by test/env/pg-image/build-image.sh). */
export const testImage: string = process.env.PLANETARION_TEST_IMAGE ?? 'planetarion-test-pg:latest';

/** Superuser and database the helpers use when a call does not name them. */
export const defaultUser = 'planetarion_user';
/** Default database name, as on the production server. */
export const defaultDb = 'planetarion';

/** Label put on every container started by startDb, so leftovers can be found: `docker ps -a -f label=planetarion.test`. */
export const testLabel = 'planetarion.test';

/** Where to connect: the superuser and database (defaults planetarion_user / planetarion). */
export interface DbTarget {
  user?: string;
  db?: string;
}

/** Options of startDb. */
export interface StartDbOptions extends DbTarget {
  /** Named volume (or absolute host path) mounted on /var/lib/postgresql/data. */
  volume?: string;
  /** A tmpfs of this size (e.g. `96m`) as the data directory instead of the container's own layer: a small database volume. */
  tmpfsSize?: string;
  /** Extra `--label key=value` pairs. */
  labels?: Record<string, string>;
  /** fsync on the new cluster (default false: faster, and crash safety is irrelevant in tests). Only applies when the data directory is initialised. */
  fsync?: boolean;
  /** How long to wait for healthy + pg_isready (default 180 000 ms: the test machine may be shared and loaded). */
  timeoutMs?: number;
}

/** Options of seedPlanetarion. */
export interface SeedOptions extends DbTarget {
  /** Multiplies every row count (default 1: a few thousand rows per big table); may be fractional, e.g. 0.1. */
  scale?: number;
}

/** Options of writeRows. */
export interface WriteRowsOptions extends DbTarget {
  /** chat_messages.channel (and news_events.kind) of the written rows; default a unique `#writer-<pid>-<n>`. */
  channel?: string;
  /** Pause between committed rows (default 5 ms). */
  intervalMs?: number;
  /** The loop ends by itself after this long, in case nobody stops it (default 300 s). */
  maxSeconds?: number;
}

/** A running background writer started by writeRows. */
export interface RowWriter {
  /** The channel (chat_messages.channel = news_events.kind) its rows carry. */
  readonly channel: string;
  /** Rows committed so far (queried from the database). */
  count(): Promise<number>;
  /** Stops the loop, waits for its session to end and returns the number of rows it committed. */
  stop(): Promise<number>;
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell; resolves with its outcome (never rejects on a non-zero exit). */
function run(cmd: string, args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {}); // EPIPE when the command exits without reading everything
    child.on('error', reject);
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            err.push(Buffer.from(`\n[test helper] timed out after ${options.timeoutMs} ms\n`));
            child.kill('SIGKILL');
          }, options.timeoutMs);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** Runs a command and returns its stdout; throws with its stderr when it fails. */
async function check(
  cmd: string,
  args: string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) {
    throw new Error(
      `${cmd} ${args.slice(0, 3).join(' ')} ... failed (${r.signal ?? `exit ${r.code}`}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A SQL string literal (standard_conforming_strings is on). */
function sqlLiteral(value: string): string {
  if (value.includes('\0')) throw new Error('SQL text cannot contain NUL');
  return `'${value.replace(/'/g, "''")}'`;
}

/**
 * Starts a labelled container of the test image running `command` instead of PostgreSQL (no
 * network; `options` are more `docker run` options).
 */
export function runTestContainer(name: string, command: string[], options: string[] = ['--no-healthcheck']): void {
  execFileSync('docker', [
    'run',
    '-d',
    '--name',
    name,
    '--network',
    'none',
    '--label',
    `${testLabel}=1`,
    ...options,
    '--entrypoint',
    command[0]!,
    testImage,
    ...command.slice(1),
  ]);
}

let counter = 0;

/** A unique, Docker-valid container/database name for one test: `<prefix>-<pid>-<n>` (lower case, [a-z0-9_.-]). */
export function scratchName(prefix: string): string {
  const clean =
    prefix
      .toLowerCase()
      .replace(/[^a-z0-9_.-]+/g, '-')
      .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '') || 'pb';
  return `${clean}-${process.pid}-${++counter}`;
}

/** Removes a container and its anonymous volumes (`docker rm -f -v`); a missing container is fine. */
export async function removeDb(name: string): Promise<void> {
  const r = await run('docker', ['rm', '-f', '-v', name], { timeoutMs: 60_000 });
  if (r.code !== 0 && !/no such container/i.test(r.stderr)) {
    throw new Error(`docker rm -f -v ${name} failed: ${r.stderr.trim()}`);
  }
}

/** Starts a fresh PostgreSQL container `name` (replacing any leftover) and waits until it is healthy and answers pg_isready. */
export async function startDb(name: string, opts: StartDbOptions = {}): Promise<void> {
  const user = opts.user ?? defaultUser;
  const db = opts.db ?? defaultDb;
  const timeoutMs = opts.timeoutMs ?? 180_000;
  await removeDb(name);
  const args = ['run', '-d', '--pull', 'never', '--name', name, '--network', 'none', '--label', `${testLabel}=1`];
  for (const [key, value] of Object.entries(opts.labels ?? {})) args.push('--label', `${key}=${value}`);
  args.push(
    '-e',
    `POSTGRES_USER=${user}`,
    '-e',
    `POSTGRES_DB=${db}`,
    '-e',
    `POSTGRES_FSYNC=${opts.fsync ? 'on' : 'off'}`,
  );
  if (opts.volume) args.push('-v', `${opts.volume}:/var/lib/postgresql/data`);
  if (opts.tmpfsSize) args.push('--tmpfs', `/var/lib/postgresql/data:size=${opts.tmpfsSize}`);
  args.push(testImage);
  await check('docker', args, { timeoutMs: 60_000 });

  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const state = await run(
      'docker',
      ['inspect', '-f', '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}', name],
      { timeoutMs: 15_000 },
    );
    last = (state.stdout || state.stderr).trim();
    const [status, health] = last.split(' ');
    if (state.code === 0 && status !== 'running' && status !== 'created' && status !== 'restarting') {
      const logs = await run('docker', ['logs', '--tail', '30', name]);
      throw new Error(`container ${name} is ${status} before becoming ready:\n${logs.stdout}${logs.stderr}`);
    }
    if (state.code === 0 && status === 'running' && (health === 'healthy' || health === 'none')) {
      const ready = await run(
        'docker',
        ['exec', name, 'pg_isready', '-q', '-h', '/var/run/postgresql', '-U', user, '-d', db],
        {
          timeoutMs: 15_000,
        },
      );
      if (ready.code === 0) return;
      last += ` (pg_isready exit ${ready.code})`;
    }
    await sleep(250);
  }
  const logs = await run('docker', ['logs', '--tail', '30', name]);
  throw new Error(
    `container ${name} not ready after ${timeoutMs} ms (last state: ${last}):\n${logs.stdout}${logs.stderr}`,
  );
}

/** The `psql` argv (after `docker exec -i <name>`) used by every helper: no psqlrc, quiet, unaligned, tuples only, stop on error. */
function psqlArgs(opts: DbTarget): string[] {
  return [
    'psql',
    '-X',
    '-q',
    '-A',
    '-t',
    '-v',
    'ON_ERROR_STOP=1',
    '-U',
    opts.user ?? defaultUser,
    '-d',
    opts.db ?? defaultDb,
  ];
}

/** Runs SQL (sent on stdin, psql meta-commands allowed) in container `name`; returns trimmed unaligned tuples-only output, throws with psql's stderr on error. */
export async function psql(name: string, sql: string, opts: DbTarget = {}): Promise<string> {
  const r = await run('docker', ['exec', '-i', name, ...psqlArgs(opts)], { input: sql, timeoutMs: 10 * 60_000 });
  if (r.code !== 0) {
    throw new Error(`psql in ${name} failed (${r.signal ?? `exit ${r.code}`}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout.trim();
}

/** Path of the seed script (test/env/seed.sql), also usable by hand with `psql -v scale=N -f`. */
export const seedSqlPath: string = new URL('../env/seed.sql', import.meta.url).pathname;

/** Creates the Planetarion-like schema and deterministic data (test/env/seed.sql) in an empty database; scale multiplies row counts. */
export async function seedPlanetarion(name: string, opts: SeedOptions = {}): Promise<void> {
  const scale = opts.scale ?? 1;
  if (!Number.isFinite(scale) || scale <= 0)
    throw new Error(`seedPlanetarion: scale must be a positive number, got ${scale}`);
  const sql = await readFile(seedSqlPath, 'utf8');
  await psql(name, `\\set scale ${scale}\n${sql}`, opts);
}

/** Exact row count of every ordinary table outside the system schemas, keyed `schema.table` (names unquoted), sorted by key. */
export async function rowCounts(name: string, opts: DbTarget = {}): Promise<Record<string, number>> {
  const out = await psql(
    name,
    `SELECT coalesce(json_object_agg(key, n ORDER BY key), '{}')
       FROM (SELECT n.nspname || '.' || c.relname AS key,
                    (xpath('/row/n/text()',
                           query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint AS n
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_%') AS t;`,
    opts,
  );
  const parsed = JSON.parse(out) as Record<string, number>;
  return Object.fromEntries(
    Object.keys(parsed)
      .sort()
      .map((k) => [k, Number(parsed[k])]),
  );
}

let writerCounter = 0;

/**
 * Starts a background writer in a seeded database: one long `docker exec -i ... psql` session
 * runs a PL/pgSQL loop that, per iteration, commits ONE transaction inserting a chat_messages
 * row (channel = writer.channel) and a matching news_events row (kind = writer.channel,
 * payload {"seq": n}). So in any consistent snapshot both counts are equal. Resolves once the
 * first row is committed.
 */
export async function writeRows(name: string, opts: WriteRowsOptions = {}): Promise<RowWriter> {
  const id = `${process.pid}-${++writerCounter}`;
  const appName = `pb-writer-${id}`;
  const channel = opts.channel ?? `#writer-${id}`;
  const pause = Math.max(0, opts.intervalMs ?? 5) / 1000;
  const maxSeconds = opts.maxSeconds ?? 300;
  const ch = sqlLiteral(channel);
  const loop = `DO $writer$
DECLARE
  n bigint := 0;
  deadline timestamptz := clock_timestamp() + make_interval(secs => ${Number(maxSeconds)});
BEGIN
  WHILE clock_timestamp() < deadline LOOP
    n := n + 1;
    INSERT INTO chat_messages (channel, author_id, body, sent_at)
      VALUES (${ch}, NULL, format(E'writer row %s: "live"\\twrite \\\\ %s', n, ${ch}),
              timestamptz '2030-01-01 00:00:00+00' + n * interval '1 second');
    INSERT INTO news_events (tick, planet_id, kind, payload, happened_at)
      VALUES (n, NULL, ${ch}, jsonb_build_object('seq', n),
              timestamptz '2030-01-01 00:00:00+00' + n * interval '1 second');
    COMMIT;
    PERFORM pg_sleep(${pause});
  END LOOP;
END
$writer$;
`;
  const child: ChildProcess = spawn('docker', ['exec', '-i', '-e', `PGAPPNAME=${appName}`, name, ...psqlArgs(opts)], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  child.stdin?.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => {
    child.on('error', (e) => {
      stderr += String(e);
      resolve(-1);
    });
    child.on('close', (code) => resolve(code));
  });
  let done = false;
  void exited.then(() => (done = true));
  child.stdin?.end(loop);

  const count = async (): Promise<number> =>
    Number(await psql(name, `SELECT count(*) FROM chat_messages WHERE channel = ${ch};`, opts));

  const stop = async (): Promise<number> => {
    const deadline = Date.now() + 30_000;
    while (!done) {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`writer ${appName} in ${name} did not stop`);
      }
      await run('docker', ['exec', '-i', name, ...psqlArgs(opts)], {
        input: `SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = ${sqlLiteral(appName)};`,
        timeoutMs: 15_000,
      });
      await Promise.race([exited, sleep(200)]);
    }
    const code = await exited;
    // Exit 3 with "canceling statement due to user request" is the normal end; 0 means maxSeconds ran out.
    if (code !== 0 && !/canceling statement due to user request/.test(stderr)) {
      throw new Error(`writer ${appName} in ${name} failed (exit ${code}): ${stderr.trim()}`);
    }
    return count();
  };

  // Resolve only once the loop is really writing, so callers act on a database under load.
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (done) throw new Error(`writer ${appName} in ${name} exited early: ${stderr.trim()}`);
    const n = await count().catch(() => 0);
    if (n > 0) break;
    if (Date.now() > deadline) {
      await stop().catch(() => {});
      throw new Error(`writer ${appName} in ${name} wrote nothing within 20 s: ${stderr.trim()}`);
    }
    await sleep(50);
  }
  return { channel, count, stop };
}

/** A psql session of the tool's own kind (lib/host/psql-session.ts) in container `name`, as the test user. */
export function openSession(name: string, database = defaultDb): PsqlSession {
  return PsqlSession.open({ docker: 'docker', container: name, user: defaultUser, database });
}
