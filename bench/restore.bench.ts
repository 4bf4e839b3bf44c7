// Benchmark: restore-database (checksum + restore beside the live DB + fingerprint + swap) against
// the raw pipeline `docker exec -i <db> sh -c 'gunzip -c | psql'` into a fresh database, in the
// same run, on a pgbench scale-30 database; and the cost of rejecting a corrupt candidate
// against reading the file once.
// Run: npx tsx bench/restore.bench.ts   (needs the test bed: bash test/env/setup.sh)
import { readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanEnv, distBin } from '../test/helpers/cli.ts';
import { psql, removeDb, startDb } from '../test/helpers/db.ts';
import { makeTempDir } from '../test/helpers/tmp.ts';
import { measure, median, pgbenchInit } from './measure.ts';

const runs = Number(process.env.BENCH_RUNS ?? 3);
const scale = Number(process.env.BENCH_SCALE ?? 30);
const db = 'pb-bench-restore';

await startDb(db);
const work = makeTempDir('planetarion-bench-');
try {
  process.stderr.write(`scale ${scale}: pgbench -i ...\n`);
  await pgbenchInit(db, scale);
  const env = cleanEnv({ PLANETARION_DIR: work, PLANETARION_DB_CONTAINER: db, PLANETARION_KEEP: '5' });
  await measure(join(distBin, 'backup-database'), [], { env });
  const file = JSON.parse(readFileSync(join(work, 'status.json'), 'utf8')).lastSuccess.file as string;
  const path = join(work, 'backups', file);

  const raw: number[] = [];
  const tool: number[] = [];
  for (let i = 0; i < runs; i++) {
    await psql(db, 'DROP DATABASE IF EXISTS raw_restore; CREATE DATABASE raw_restore;', { db: 'postgres' });
    raw.push(
      (
        await measure(
          'docker',
          ['exec', '-i', db, 'sh', '-c', 'gunzip -c | psql -X -q -U planetarion_user -d raw_restore >/dev/null'],
          { stdinFile: path },
        )
      ).seconds,
    );
    tool.push((await measure(join(distBin, 'restore-database'), [path, '--yes'], { env })).seconds);
  }
  await psql(db, 'DROP DATABASE IF EXISTS raw_restore;', { db: 'postgres' });

  // A corrupt candidate: one flipped byte in a copy with the same sidecars.
  const bad = join(
    work,
    'backups',
    file.replace(/_(\d{6})\./, (_, t: string) => `_${String(Number(t) + 1).padStart(6, '0')}.`),
  );
  copyFileSync(path, bad);
  copyFileSync(`${path}.json`, `${bad}.json`);
  writeFileSync(`${bad}.sha256`, readFileSync(`${path}.sha256`, 'utf8').replace(file, bad.split('/').pop()!));
  const bytes = readFileSync(bad);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  writeFileSync(bad, bytes);
  const readOnce = median(await Promise.all([0, 1, 2].map(() => measure('sha256sum', [bad]).then((s) => s.seconds))));
  const reject: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await measure(join(distBin, 'restore-database'), [bad, '--yes'], { env }).catch(() => undefined);
    reject.push((performance.now() - started) / 1000);
  }
  const starts: number[] = [];
  for (let i = 0; i < 3; i++) starts.push((await measure(join(distBin, 'restore-database'), ['--version'])).seconds);
  const start = median(starts);
  const size = await psql(db, "SELECT pg_size_pretty(pg_database_size('planetarion'))");
  console.log(
    `\nrestore-database vs raw 'docker exec -i <db> sh -c "gunzip -c | psql"' (scale ${scale}, ${size}, median of ${runs})\n`,
  );
  console.log(`raw pipeline:                  ${median(raw).toFixed(2)} s`);
  console.log(
    `restore-database (verified):   ${median(tool).toFixed(2)} s  (${(median(tool) / median(raw)).toFixed(2)}x; target <= 1.6x)`,
  );
  console.log(
    `reject a corrupt candidate:    ${median(reject).toFixed(2)} s  (the tool's bare start, --version: ${start.toFixed(2)} s; so ${(median(reject) - start).toFixed(2)} s for the rejection itself`,
  );
  console.log(`                               against reading the file once with sha256sum: ${readOnce.toFixed(2)} s)`);
} finally {
  rmSync(work, { recursive: true, force: true });
  await removeDb(db);
}
