// Benchmark: the writers' downtime of an A-B deployment over a pgbench scale-30 database, against
// the raw dump + raw restore time measured in the same run (`docker exec <db> pg_dump -Z1 > f`,
// then `gunzip -c | psql` into a fresh database).
// Run: npx tsx bench/deploy.bench.ts   (needs the test bed and a build: npm run build)
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { runTool } from '../test/helpers/cli.ts';
import { psql } from '../test/helpers/db.ts';
import { makeTestNas } from '../test/helpers/stack.ts';
import { measure } from './measure.ts';

const scale = Number(process.env.BENCH_SCALE ?? 30);
const nas = makeTestNas();
try {
  const deploy = (args: string[] = []) => runTool('deploy-to-qnap', ['--local', '--json', ...nas.deployArgs, ...args], nas.env);
  const first = await deploy();
  if (first.code !== 0) throw new Error(first.stderr);
  process.stderr.write(`scale ${scale}: pgbench -i ...\n`);
  await measure('docker', ['exec', nas.container, 'pgbench', '-i', '-q', '-s', String(scale), '-U', 'planetarion_user', 'planetarion']);

  const file = join(nas.dir, 'raw.sql.gz');
  const dump = await measure('docker', ['exec', nas.container, 'pg_dump', '-Z1', '-U', 'planetarion_user', '-d', 'planetarion'], { stdoutFile: file });
  await psql(nas.container, 'DROP DATABASE IF EXISTS raw_restore; CREATE DATABASE raw_restore;', { db: 'postgres' });
  const restore = await measure('docker', ['exec', '-i', nas.container, 'sh', '-c', 'gunzip -c | psql -X -q -U planetarion_user -d raw_restore >/dev/null'], { stdinFile: file });
  await psql(nas.container, 'DROP DATABASE raw_restore;', { db: 'postgres' });
  execFileSync('rm', ['-f', file]);

  const ab = await deploy();
  if (ab.code !== 0) throw new Error(ab.stderr);
  const result = JSON.parse(ab.stdout);
  const raw = dump.seconds + restore.seconds;
  const downtime = result.downtimeMs / 1000;
  console.log(`\nA-B deployment over pgbench scale ${scale}\n`);
  console.log(`raw dump ${dump.seconds.toFixed(2)} s + raw restore ${restore.seconds.toFixed(2)} s = ${raw.toFixed(2)} s`);
  console.log(`writers' downtime: ${downtime.toFixed(2)} s (${(downtime / raw).toFixed(2)}x; target <= 1.3x); whole deployment ${(result.totalMs / 1000).toFixed(1)} s`);
} finally {
  nas.cleanup();
}
