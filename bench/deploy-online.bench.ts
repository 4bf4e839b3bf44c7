// Benchmark: the writers' downtime of an online A-B deployment (logical replication) against the
// offline one (freeze, fresh dump, restore) over pgbench databases of growing size, in one run.
// Online, the writers stop only for the final catch-up, the proof and the switch, so its
// downtime should not grow with the data; offline it grows with the dump and restore.
// Run: npx tsx bench/deploy-online.bench.ts   (needs the test bed and a build: npm run build)
// BENCH_SCALES=10,30 (pgbench scales), BENCH_RUNS=1 (deployments per method and scale).
import { runTool } from '../test/helpers/cli.ts';
import { makeTestNas } from '../test/helpers/stack.ts';
import { measure, median } from './measure.ts';

const scales = (process.env.BENCH_SCALES ?? '10,30').split(',').map(Number);
const runs = Number(process.env.BENCH_RUNS ?? 1);
const rows: string[] = [];
for (const scale of scales) {
  const nas = makeTestNas();
  try {
    const deploy = async (args: string[]) => {
      const r = await runTool('deploy-to-qnap', ['--local', '--json', ...nas.deployArgs, ...args], nas.env);
      if (r.code !== 0) throw new Error(r.stderr);
      return JSON.parse(r.stdout) as { downtimeMs: number; totalMs: number };
    };
    await deploy([]);
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
    const results: Record<'online' | 'offline', { down: number[]; total: number[] }> = {
      online: { down: [], total: [] },
      offline: { down: [], total: [] },
    };
    for (let i = 0; i < runs; i++) {
      for (const method of ['online', 'offline'] as const) {
        const result = await deploy(method === 'offline' ? ['--offline'] : []);
        results[method].down.push(result.downtimeMs / 1000);
        results[method].total.push(result.totalMs / 1000);
      }
    }
    for (const method of ['online', 'offline'] as const) {
      rows.push(
        `scale ${String(scale).padStart(3)}  ${method.padEnd(7)}  writers down ${median(results[method].down).toFixed(2)} s   whole deployment ${median(results[method].total).toFixed(1)} s`,
      );
    }
  } finally {
    nas.cleanup();
  }
}
console.log(`\nA-B deployment, writers' downtime by method and database size (median of ${runs})\n`);
console.log(rows.join('\n'));
console.log(`(downtime includes the new app's own health check, interval: 1s in the test stack)`);
