// Benchmark: the writers' downtime of an A-B deployment over a pgbench scale-30 database, against
// the raw dump + raw restore time measured in the same run (`docker exec <db> pg_dump -Z1 > f`,
// then `gunzip -c | psql` into a fresh database).
// Run: npx tsx bench/deploy.bench.ts   (needs the test bed and a build: npm run build)
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { runTool } from '../test/helpers/cli.ts';
import { psql } from '../test/helpers/db.ts';
import { makeTestNas } from '../test/helpers/stack.ts';
import { measure, median } from './measure.ts';

const scale = Number(process.env.BENCH_SCALE ?? 30);
const nas = makeTestNas();
try {
  const deploy = (args: string[] = []) =>
    runTool('deploy-to-qnap', ['--local', '--json', ...nas.deployArgs, ...args], nas.env);
  const first = await deploy();
  if (first.code !== 0) throw new Error(first.stderr);
  process.stderr.write(`scale ${scale}: pgbench -i ...\n`);
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

  // Medians of several runs: one run of each varies by 20% or more on a small machine.
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  const file = join(nas.dir, 'raw.sql.gz');
  const dumps: number[] = [];
  const restores: number[] = [];
  const downtimes: number[] = [];
  const totals: number[] = [];
  for (let i = 0; i < runs; i++) {
    dumps.push(
      (
        await measure(
          'docker',
          ['exec', nas.container, 'pg_dump', '-Z1', '-U', 'planetarion_user', '-d', 'planetarion'],
          { stdoutFile: file },
        )
      ).seconds,
    );
    await psql(nas.container, 'DROP DATABASE IF EXISTS raw_restore; CREATE DATABASE raw_restore;', { db: 'postgres' });
    restores.push(
      (
        await measure(
          'docker',
          [
            'exec',
            '-i',
            nas.container,
            'sh',
            '-c',
            'gunzip -c | psql -X -q -U planetarion_user -d raw_restore >/dev/null',
          ],
          { stdinFile: file },
        )
      ).seconds,
    );
    await psql(nas.container, 'DROP DATABASE raw_restore;', { db: 'postgres' });
    execFileSync('rm', ['-f', file]);

    const ab = await deploy();
    if (ab.code !== 0) throw new Error(ab.stderr);
    const result = JSON.parse(ab.stdout);
    downtimes.push(result.downtimeMs / 1000);
    totals.push(result.totalMs / 1000);
  }
  const [dump, restore, downtime] = [median(dumps), median(restores), median(downtimes)];
  const raw = dump + restore;
  console.log(`\nA-B deployment over pgbench scale ${scale} (median of ${runs})\n`);
  console.log(`raw dump ${dump.toFixed(2)} s + raw restore ${restore.toFixed(2)} s = ${raw.toFixed(2)} s`);
  console.log(
    `writers' downtime: ${downtime.toFixed(2)} s (${(downtime / raw).toFixed(2)}x; target <= 1.3x); whole deployment ${median(totals).toFixed(1)} s`,
  );
  console.log(`(downtime includes the new app's own health check, interval: 1s in the test stack)`);
} finally {
  nas.cleanup();
}
