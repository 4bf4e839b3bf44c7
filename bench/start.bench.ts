// Benchmark: how long the executable takes to start, against the floor: an empty SEA executable
// of the same embedded Node, started the same way (the launcher, the bundled loader and
// libraries). Also the same bundle without its code cache, which shows what the cache saves.
// NODE_EXTRA_CA_CERTS is unset for every run: Node reads that file at every start, and the NAS
// does not set it. Prints medians of interleaved runs and the ratios to the floor.
// Run: npx tsx bench/start.bench.ts   (after npm run build; BENCH_RUNS=40 for more runs)
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { distBin } from '../test/helpers/cli.ts';
import { makeTempDir } from '../test/helpers/tmp.ts';
import { benchEnv, median } from './measure.ts';

const runs = Number(process.env.BENCH_RUNS ?? 25);
const root = join(import.meta.dirname, '..');
const nodeVersion = (
  JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { config: { embeddedNode: string } }
).config.embeddedNode;
/** The x64 base binaries build.mjs caches: the official one (runs here) and its stripped copy. */
const cachedNode = join(root, '.cache/node', `x64-${nodeVersion}`);

function mustRun(command: string, args: string[], options: { cwd?: string } = {}): string {
  const r = spawnSync(command, args, { encoding: 'utf8', ...options });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A copy of the linux-x64 folder whose executable is a SEA made from `script` and `assets` (same
 * Node, same loader and libraries, same launcher), as build.mjs makes the real one.
 */
function seaFolder(
  work: string,
  name: string,
  script: string,
  useCodeCache: boolean,
  assets: Record<string, string> = {},
): string {
  const folder = join(work, name);
  mkdirSync(join(folder, 'runtime'), { recursive: true });
  for (const lib of readdirSync(join(distBin, 'runtime')).filter((f) => f !== 'planetarion'))
    copyFileSync(join(distBin, 'runtime', lib), join(folder, 'runtime', lib));
  copyFileSync(join(distBin, 'planetarion'), join(folder, 'planetarion'));
  writeFileSync(join(folder, 'main.cjs'), script);
  writeFileSync(
    join(folder, 'sea.json'),
    JSON.stringify({
      main: 'main.cjs',
      output: 'main.blob',
      disableExperimentalSEAWarning: true,
      useCodeCache,
      assets,
    }),
  );
  mustRun(join(cachedNode, 'node'), ['--random-seed=1', '--experimental-sea-config', 'sea.json'], { cwd: folder });
  const exe = join(folder, 'runtime/planetarion');
  copyFileSync(join(cachedNode, 'node.stripped'), exe);
  mustRun(process.execPath, [
    join(root, 'node_modules/postject/dist/cli.js'),
    exe,
    'NODE_SEA_BLOB',
    join(folder, 'main.blob'),
    '--sentinel-fuse',
    'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
  ]);
  chmodSync(exe, 0o755);
  return folder;
}

/** Wall seconds of one run; throws unless it exits 0 with nothing on stderr (a cron run would mail it). */
function wall(file: string, args: string[], env: NodeJS.ProcessEnv): number {
  const started = performance.now();
  const r = spawnSync(file, args, { env, encoding: 'utf8' });
  const seconds = (performance.now() - started) / 1000;
  if (r.status !== 0 || r.stderr !== '')
    throw new Error(`${file} ${args.join(' ')}: exit ${r.status}, stderr ${r.stderr}`);
  return seconds;
}

/**
 * CPU seconds (user + system) of one run, from bash's `times` (the waited-for children's rusage):
 * on this shared machine wall time mostly measures the other processes, CPU time much less so.
 */
function cpu(file: string, args: string[], env: NodeJS.ProcessEnv): number {
  const out = spawnSync('bash', ['-c', '"$@" >/dev/null 2>&1; times', 'bash', file, ...args], {
    env,
    encoding: 'utf8',
  }).stdout;
  const children = out
    .trim()
    .split('\n')[1]!
    .match(/(\d+)m([\d.]+)s/g)!;
  return children.reduce((sum, t) => sum + Number(/(\d+)m/.exec(t)![1]) * 60 + Number(/m([\d.]+)s/.exec(t)![1]), 0);
}

const work = makeTempDir('planetarion-start-bench-');
try {
  process.stderr.write('building the floor (an empty SEA) and the bundle without a code cache...\n');
  const floor = seaFolder(work, 'floor', '', false);
  // With the SDK bundle as its asset, as the real executable has it (build/sdk.mjs).
  const noCache = seaFolder(work, 'no-cache', readFileSync(join(root, 'dist/planetarion.cjs'), 'utf8'), false, {
    'aws-sdk.cjs': join(root, 'dist/aws-sdk.cjs'),
  });
  const env = benchEnv();
  const cases: { label: string; file: string; args: string[] }[] = [
    { label: 'floor: empty SEA, same Node', file: join(floor, 'planetarion'), args: [] },
    { label: 'planetarion --version', file: join(distBin, 'planetarion'), args: ['--version'] },
    { label: 'backup-database --version', file: join(distBin, 'backup-database'), args: ['--version'] },
    { label: 'backup-database --help', file: join(distBin, 'backup-database'), args: ['--help'] },
    {
      label: 'the same, bundle without code cache',
      file: join(noCache, 'planetarion'),
      args: ['backup-database', '--version'],
    },
  ];
  const walls = cases.map(() => [] as number[]);
  const cpus = cases.map(() => [] as number[]);
  for (const c of cases) wall(c.file, c.args, env); // warm the page cache, check each exits cleanly
  // Interleaved, so a burst of load on this shared machine hits every case alike.
  for (let i = 0; i < runs; i++) {
    cases.forEach((c, j) => {
      walls[j]!.push(wall(c.file, c.args, env));
      cpus[j]!.push(cpu(c.file, c.args, env));
    });
  }
  const [wallFloor, cpuFloor] = [median(walls[0]!), median(cpus[0]!)];
  console.log(
    `\nstart of the linux-x64 executable, node v${nodeVersion}, NODE_EXTRA_CA_CERTS unset (medians of ${runs} interleaved runs)\n`,
  );
  console.log(`${''.padEnd(42)}   wall (ratio)      CPU (ratio)`);
  cases.forEach((c, j) => {
    const [w, u] = [median(walls[j]!), median(cpus[j]!)];
    console.log(
      `${c.label.padEnd(42)} ${(w * 1000).toFixed(0).padStart(5)} ms (${(w / wallFloor).toFixed(2)}x)  ${(u * 1000).toFixed(0).padStart(5)} ms (${(u / cpuFloor).toFixed(2)}x)`,
    );
  });
  console.log('\ntarget: --version and backup-database --help within 1.5x of the floor');
} finally {
  rmSync(work, { recursive: true, force: true });
}
