// Benchmark: backup-database against the raw pipeline `docker exec <db> pg_dump -Z1 > file`, in the
// same run, on pgbench databases of scale 1 and 40. Prints wall times, ratios and the peak RSS
// of the backup executable (it streams, so RSS must not grow with the database), the fixed cost
// (the tool's time over raw on the smallest database) and the marginal cost (how much more the
// tool takes than raw per extra byte, from the smallest to the largest scale).
// Run: npx tsx bench/backup.bench.ts   (needs the test bed: bash test/env/setup.sh;
// BENCH_SCALES=1,40 and BENCH_RUNS=3 are the defaults). BENCH_BASE=DIR also runs the executables
// in DIR (another checkout's dist/bin/linux-x64), alternating with this build's in each run, so
// that a change is measured against what it changes on the same machine at the same time.
import { rmSync } from 'node:fs';
import { benchEnv, measure, median, pgbenchInit, type Sample } from './measure.ts';
import { join } from 'node:path';
import { distBin } from '../test/helpers/cli.ts';
import { psql, removeDb, startDb } from '../test/helpers/db.ts';
import { makeTempDir } from '../test/helpers/tmp.ts';

const runs = Number(process.env.BENCH_RUNS ?? 3);
const scales = (process.env.BENCH_SCALES ?? '1,40').split(',').map(Number);
const builds = [
  { name: 'this build', bin: distBin },
  ...(process.env.BENCH_BASE ? [{ name: 'base', bin: process.env.BENCH_BASE }] : []),
];

async function benchScale(scale: number) {
  // Per process: benches from other checkouts on this machine must not remove this one's container.
  const db = `pb-bench-s${scale}-${process.pid}`;
  // Generous: on a busy shared machine the container takes minutes to become healthy.
  await startDb(db, { timeoutMs: 300_000 });
  try {
    process.stderr.write(`scale ${scale}: pgbench -i ...\n`);
    await pgbenchInit(db, scale);
    const size = await psql(db, "SELECT pg_size_pretty(pg_database_size('planetarion'))");
    const work = makeTempDir('planetarion-bench-');
    const raw: number[] = [];
    const samples = builds.map(() => ({ off: [] as Sample[], full: [] as Sample[] }));
    for (let i = 0; i < runs; i++) {
      raw.push(
        (
          await measure('docker', ['exec', db, 'pg_dump', '-Z1', '-U', 'planetarion_user', '-d', 'planetarion'], {
            stdoutFile: join(work, 'raw.sql.gz'),
          })
        ).seconds,
      );
      const env = benchEnv({ PLANETARION_DIR: work, PLANETARION_DB_CONTAINER: db, PLANETARION_KEEP: '1' });
      // Each run alternates the builds' order, so neither always follows the raw dump.
      const order = i % 2 === 0 ? builds.keys() : [...builds.keys()].reverse();
      for (const b of order) {
        samples[b]!.off.push(await measure(join(builds[b]!.bin, 'backup-database'), ['--fingerprint', 'off'], { env }));
        samples[b]!.full.push(await measure(join(builds[b]!.bin, 'backup-database'), [], { env }));
      }
    }
    rmSync(work, { recursive: true, force: true });
    return {
      scale,
      size,
      raw: median(raw),
      builds: samples.map(({ off, full }) => ({
        off: median(off.map((s) => s.seconds)),
        full: median(full.map((s) => s.seconds)),
        rss: Math.max(...off.map((s) => s.peakRssMb), ...full.map((s) => s.peakRssMb)),
      })),
    };
  } finally {
    await removeDb(db);
  }
}

const results: Awaited<ReturnType<typeof benchScale>>[] = [];
for (const scale of scales) results.push(await benchScale(scale));
// The fixed cost no backup can avoid: starting the executable at all.
const bareStart: number[] = [];
for (let i = 0; i < 5; i++)
  bareStart.push((await measure(join(distBin, 'backup-database'), ['--version'], { env: benchEnv() })).seconds);
console.log(
  `\nbackup-database vs raw 'docker exec <db> pg_dump -Z1 > file' (median of ${runs} runs; NODE_EXTRA_CA_CERTS unset)\n`,
);
const [small, large] = [results[0]!, results[results.length - 1]!];
const plus = (tool: number, raw: number) => `${tool >= raw ? '+' : ''}${(tool - raw).toFixed(2)} s`;
builds.forEach((build, b) => {
  if (builds.length > 1) console.log(`${build.name} (${build.bin}):`);
  console.log('scale  db size   raw pg_dump  fingerprint off (ratio)  full fingerprint (ratio)  peak RSS');
  for (const r of results) {
    const t = r.builds[b]!;
    console.log(
      `${String(r.scale).padStart(5)}  ${r.size.padEnd(8)}  ${r.raw.toFixed(2).padStart(9)} s  ${t.off.toFixed(2).padStart(8)} s (${(t.off / r.raw).toFixed(2)}x)       ${t.full.toFixed(2).padStart(8)} s (${(t.full / r.raw).toFixed(2)}x)        ${t.rss.toFixed(0)} MB`,
    );
  }
  const [s, l] = [small.builds[b]!, large.builds[b]!];
  console.log(
    `\nfixed cost, scale ${small.scale}: fingerprint off ${plus(s.off, small.raw)}, full fingerprint ${plus(s.full, small.raw)} over raw (target +0.10 s)`,
  );
  if (results.length >= 2) {
    console.log(
      `peak RSS scale ${large.scale} / scale ${small.scale}: ${(l.rss / s.rss).toFixed(2)}x (streams: should stay within 1.10x)`,
    );
    const rawDelta = large.raw - small.raw;
    const marginal = (tool: 'off' | 'full') =>
      `${(l[tool] - s[tool]).toFixed(2)} s (${((l[tool] - s[tool]) / rawDelta).toFixed(2)}x)`;
    console.log(
      `marginal cost, scale ${small.scale} -> ${large.scale}: raw ${rawDelta.toFixed(2)} s, fingerprint off ${marginal('off')}, full fingerprint ${marginal('full')} (targets 1.20x, 1.75x)`,
    );
  }
  console.log('');
});
if (builds.length > 1)
  for (const r of results) {
    const [now, base] = r.builds;
    console.log(
      `scale ${r.scale}, this build over base: fingerprint off ${plus(now!.off, base!.off)}, full fingerprint ${plus(now!.full, base!.full)}`,
    );
  }
const start = median(bareStart);
console.log(
  `\nthe executable's bare start (--version): ${start.toFixed(2)} s = ${results.map((r) => `${((start / r.raw) * 100).toFixed(0)}% of raw at scale ${r.scale}`).join(', ')}`,
);
console.log(
  'targets: fixed cost <= +0.10 s; marginal cost fingerprint off <= 1.20x, full fingerprint <= 1.75x; peak RSS <= 120 MB',
);
