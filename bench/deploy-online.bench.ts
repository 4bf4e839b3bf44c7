// Benchmark: what the game sees of an A-B deployment, online (logical replication) and offline
// (freeze, fresh dump, restore), over pgbench databases of growing size, against the raw dump +
// raw restore of the same database in the same run (`docker exec <db> pg_dump -Z1 > f`, then
// `gunzip -c | psql` into a fresh database). A host-side writer commits a tick every 50 ms, each
// in its own `docker exec psql` like a cron tick; the measure is its longest gap between two
// committed ticks across the deployment (the floor is its gap before the deployment: one
// `docker exec` plus the sleep). Online, the writers stop only for the final catch-up, the proof
// and the switch, so the gap should not grow with the data; offline it grows with dump and restore.
// Run: npx tsx bench/deploy-online.bench.ts   (needs the test bed and a build: npm run build)
// BENCH_SCALES=10,30,50 (pgbench scales), BENCH_RUNS=1 (deployments per method and scale),
// BENCH_METHODS=online,offline, BENCH_DEPLOY_LOG=FILE (each deployment's log and the writer's errors, in ms).
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runTool, startTool, waitFor } from '../test/helpers/cli.ts';
import { psql } from '../test/helpers/db.ts';
import { makeTestNas, sqlIn, type TestNas } from '../test/helpers/stack.ts';
import { measure, median } from './measure.ts';

const scales = (process.env.BENCH_SCALES ?? '10,30,50').split(',').map(Number);
const runs = Number(process.env.BENCH_RUNS ?? 1);
const methods = (process.env.BENCH_METHODS ?? 'online,offline').split(',') as Method[];
type Method = 'online' | 'offline';

interface Writer {
  child: ChildProcess;
  /** Host times (ms) of the ticks that committed, and of the attempts that failed. */
  commits: number[];
  errors: string[];
}

/** A host-side writer: one transaction per tick, each in a new `docker exec psql`, 50 ms apart. */
function startWriter(container: string): Writer {
  const tick =
    'INSERT INTO bench_ticks DEFAULT VALUES; UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1';
  const script = `while :; do if out=$(docker exec "$1" psql -X -q -1 -v ON_ERROR_STOP=1 -U planetarion_user -d planetarion -c "${tick}" 2>&1 >/dev/null); then echo "ok $(date +%s%3N)"; else echo "error $(date +%s%3N) $out" | tr '\\n' ' '; echo; fi; sleep 0.05; done`;
  const child = spawn('sh', ['-c', script, 'sh', container], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  const writer: Writer = { child, commits: [], errors: [] };
  let partial = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith('ok ')) writer.commits.push(Number(line.slice(3)));
      else if (line) {
        writer.errors.push(line);
        if (process.env.BENCH_DEPLOY_LOG)
          appendFileSync(process.env.BENCH_DEPLOY_LOG, `${Date.now()} writer: ${line}\n`);
      }
    }
  });
  return writer;
}

/** The longest gap between two consecutive commits that spans any part of [from, to]. */
function longestGap(commits: number[], from: number, to: number): number {
  let gap = 0;
  for (let i = 1; i < commits.length; i++)
    if (commits[i]! >= from && commits[i - 1]! <= to) gap = Math.max(gap, commits[i]! - commits[i - 1]!);
  return gap / 1000;
}

/** Raw dump and raw restore of the live database, seconds each. */
async function rawDumpRestore(nas: TestNas): Promise<{ dump: number; restore: number }> {
  const file = join(nas.dir, 'raw.sql.gz');
  const dumpArgs = ['exec', nas.container, 'pg_dump', '-Z1', '-U', 'planetarion_user', '-d', 'planetarion'];
  const dump = (await measure('docker', dumpArgs, { stdoutFile: file })).seconds;
  await psql(nas.container, 'DROP DATABASE IF EXISTS raw_restore; CREATE DATABASE raw_restore;', { db: 'postgres' });
  const psqlIn = 'gunzip -c | psql -X -q -U planetarion_user -d raw_restore >/dev/null';
  const restore = (await measure('docker', ['exec', '-i', nas.container, 'sh', '-c', psqlIn], { stdinFile: file }))
    .seconds;
  await psql(nas.container, 'DROP DATABASE raw_restore;', { db: 'postgres' });
  await measure('rm', ['-f', file]);
  return { dump, restore };
}

/**
 * One deployment; with BENCH_DEPLOY_LOG=FILE its log lines are appended there, each with the
 * bench's clock (ms) when it arrived: the log's own stamps are whole seconds, too coarse for a gap.
 */
async function deploy(nas: TestNas, args: string[]): Promise<{ downtimeMs: number; totalMs: number }> {
  const argv = ['--local', '--json', '--health-timeout', '300', ...nas.deployArgs, ...args];
  const tool = startTool('deploy-to-qnap', argv, nas.env);
  const logFile = process.env.BENCH_DEPLOY_LOG;
  if (logFile) {
    appendFileSync(logFile, `${Date.now()} bench: deploy-to-qnap ${args.join(' ')}\n`);
    tool.child.stderr!.on('data', (d: string) => {
      const lines = d.split('\n').filter(Boolean);
      appendFileSync(logFile, lines.map((l) => `${Date.now()} ${l}\n`).join(''));
    });
  }
  const r = await tool.done;
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

/** The plan must say how the slot is filled: a bench of the offline path labelled online would be worthless. */
async function assertFill(nas: TestNas, method: Method): Promise<void> {
  const args = ['--local', '--dry-run', '--json', ...nas.deployArgs, ...(method === 'offline' ? ['--offline'] : [])];
  const r = await runTool('deploy-to-qnap', args, nas.env);
  const fill = /Fill: (online|offline)/.exec(r.stdout)?.[1];
  if (fill !== method)
    throw new Error(`the plan fills the slot ${fill ?? '(no Fill line)'}, not ${method}: ${r.stdout}`);
}

interface Sample {
  gap: number;
  floor: number;
  downtime: number;
  total: number;
  errors: number;
}

async function deployWithWriter(nas: TestNas, method: Method): Promise<Sample> {
  await assertFill(nas, method);
  const writer = startWriter(nas.container);
  try {
    await waitFor('the writer to commit', () => writer.commits.length > 10, 300_000, 100);
    const before = writer.commits.slice(1).map((t, i) => t - writer.commits[i]!);
    const from = Date.now();
    const result = await deploy(nas, method === 'offline' ? ['--offline'] : []);
    const to = Date.now();
    const after = writer.commits.length;
    await waitFor('the writer to commit after the deployment', () => writer.commits.length > after + 3, 300_000, 100);
    return {
      gap: longestGap(writer.commits, from, to),
      floor: median(before) / 1000,
      downtime: result.downtimeMs / 1000,
      total: result.totalMs / 1000,
      errors: writer.errors.length,
    };
  } finally {
    process.kill(-writer.child.pid!, 'SIGKILL');
  }
}

async function benchScale(scale: number): Promise<string[]> {
  const nas = makeTestNas();
  try {
    await deploy(nas, []);
    process.stderr.write(`scale ${scale}: pgbench -i ...\n`);
    // pgbench_history has no key: the online deployment gives it REPLICA IDENTITY FULL for its duration.
    await measure('docker', [
      'exec',
      nas.container,
      'pgbench',
      '-i',
      '-q',
      '-s',
      String(scale),
      '-U',
      'planetarion_user',
      'planetarion',
    ]);
    sqlIn(
      nas.container,
      'CREATE TABLE bench_ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())',
    );
    const size = sqlIn(nas.container, "SELECT pg_size_pretty(pg_database_size('planetarion'))");
    const raw: { dump: number; restore: number }[] = [];
    const samples: Record<Method, Sample[]> = { online: [], offline: [] };
    for (let i = 0; i < runs; i++) {
      process.stderr.write(`scale ${scale}: raw dump + restore ...\n`);
      raw.push(await rawDumpRestore(nas));
      for (const method of methods) {
        process.stderr.write(`scale ${scale}: ${method} deployment ...\n`);
        samples[method].push(await deployWithWriter(nas, method));
      }
    }
    const [dump, restore] = [median(raw.map((r) => r.dump)), median(raw.map((r) => r.restore))];
    const rows = [
      `scale ${scale} (${size}): raw dump ${dump.toFixed(2)} s + raw restore ${restore.toFixed(2)} s = ${(dump + restore).toFixed(2)} s`,
    ];
    for (const method of methods) {
      const s = samples[method];
      const m = (k: keyof Sample) => median(s.map((x) => x[k]));
      rows.push(
        `  ${method.padEnd(7)}  longest gap between ticks ${m('gap').toFixed(2)} s (${(m('gap') / (dump + restore)).toFixed(2)}x raw; floor ${m('floor').toFixed(2)} s)   tool's writers-down ${m('downtime').toFixed(2)} s   whole deployment ${m('total').toFixed(1)} s   writer errors ${m('errors')}`,
      );
    }
    process.stderr.write(`${rows.join('\n')}\n`);
    return rows;
  } finally {
    nas.cleanup();
  }
}

/** Log lines that mark the steps of the freeze, in order (what breakdown() times between). */
const freezeMarks: Array<[string, RegExp]> = [
  ['freeze', /Phase \d+\/\d+ freeze/],
  ['fenced', /Fence: .* takes no writes/],
  ['final LSN', /replayed the live database up to/],
  ['sequences', /Copied \d+ sequence/],
  ['proven', /Fingerprint proven/],
  ['started', /Phase \d+\/\d+ detach/],
  ['detached', /Phase \d+\/\d+ release/],
  ['released', /Phase \d+\/\d+ switch/],
  ['switched', /Switched: /],
];

/** Where each online deployment's freeze went, from the stamped log (BENCH_DEPLOY_LOG). */
function breakdown(logFile: string): string[] {
  const deployments: Array<Map<string, number>> = [];
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    const match = /^(\d+) (.*)$/.exec(line);
    if (!match) continue;
    const [at, text] = [Number(match[1]), match[2]!];
    if (text.startsWith('bench: deploy-to-qnap')) deployments.push(new Map());
    const current = deployments[deployments.length - 1];
    for (const [name, pattern] of freezeMarks)
      if (current && !current.has(name) && pattern.test(text)) current.set(name, at);
  }
  return deployments
    .filter((d) => d.has('freeze') && d.has('switched'))
    .map((d) => {
      const seen = freezeMarks.map(([name]) => name).filter((name) => d.has(name));
      const steps = seen
        .slice(1)
        .map((name, i) => `${seen[i]} -> ${name} ${((d.get(name)! - d.get(seen[i]!)!) / 1000).toFixed(1)} s`);
      return `freeze -> switched ${((d.get('switched')! - d.get('freeze')!) / 1000).toFixed(1)} s: ${steps.join(', ')}`;
    });
}

const rows: string[] = [];
for (const scale of scales) rows.push(...(await benchScale(scale)));
console.log(
  `\nA-B deployment: the writer's longest gap between committed ticks vs raw dump + restore (median of ${runs})\n`,
);
console.log(rows.join('\n'));
console.log(
  `(the gap includes the new app's own health check, interval: 1s in the test stack; targets: online <= 0.3x raw at scale 30, scale 10 vs 50 within 1.5x)`,
);
if (process.env.BENCH_DEPLOY_LOG) {
  console.log(`\nWhere each online deployment's freeze went (from ${process.env.BENCH_DEPLOY_LOG}, in the order run):`);
  for (const line of breakdown(process.env.BENCH_DEPLOY_LOG)) console.log(`  ${line}`);
}
