// Benchmark: an age-encrypted backup against the unencrypted one, same run, same database
// (pgbench scale 30 by default), runs interleaved so drift hits both alike. Also the restore drill
// of each (the encrypted one is decrypted twice: once to verify before any database is touched,
// once as it streams into the container). Prints wall times, ratios and peak RSS.
// Run: npx tsx bench/encrypt.bench.ts   (needs the test bed: bash test/env/setup.sh)
// BENCH_RUNS (default 3), BENCH_SCALE (30), BENCH_COMPRESS (gzip | none).
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { measure, median, pgbenchInit, type Sample } from './measure.ts';
import { distBin, cleanEnv } from '../test/helpers/cli.ts';
import { psql, removeDb, startDb } from '../test/helpers/db.ts';
import { makeTempDir } from '../test/helpers/tmp.ts';

const runs = Number(process.env.BENCH_RUNS ?? 3);
const scale = Number(process.env.BENCH_SCALE ?? 30);
const compress = process.env.BENCH_COMPRESS ?? 'gzip';

const db = `pb-bench-age-s${scale}`;
await startDb(db);
try {
  process.stderr.write(`scale ${scale}: pgbench -i ...\n`);
  await pgbenchInit(db, scale);
  const size = await psql(db, "SELECT pg_size_pretty(pg_database_size('planetarion'))");
  const keys = makeTempDir('planetarion-bench-keys-');
  const keyFile = join(keys, 'key.txt');
  execFileSync('age-keygen', ['-o', keyFile], { stdio: 'ignore' });
  const recipient = execFileSync('age-keygen', ['-y', keyFile], { encoding: 'utf8' }).trim();
  const plainDir = makeTempDir('planetarion-bench-');
  const ageDir = makeTempDir('planetarion-bench-');
  const base = { PLANETARION_DB_CONTAINER: db, PLANETARION_KEEP: '1', PLANETARION_COMPRESS: compress };
  const plainEnv = cleanEnv({ ...base, PLANETARION_DIR: plainDir });
  const ageEnv = cleanEnv({
    ...base,
    PLANETARION_DIR: ageDir,
    PLANETARION_AGE_RECIPIENTS: recipient,
    PLANETARION_AGE_IDENTITY: keyFile,
  });
  const backup = { plain: [] as Sample[], age: [] as Sample[] };
  const drill = { plain: [] as Sample[], age: [] as Sample[] };
  for (let i = 0; i < runs; i++) {
    // Alternate which goes first, so neither always gets the warm cache.
    const order = i % 2 === 0 ? (['plain', 'age'] as const) : (['age', 'plain'] as const);
    for (const kind of order)
      backup[kind].push(
        await measure(join(distBin, 'backup-database'), [], { env: kind === 'age' ? ageEnv : plainEnv }),
      );
    for (const kind of order)
      drill[kind].push(
        await measure(join(distBin, 'restore-database'), ['--test', 'latest'], {
          env: kind === 'age' ? ageEnv : plainEnv,
        }),
      );
  }
  const fileSize = (dir: string) => {
    const name = readdirSync(join(dir, 'backups')).find((n) => /^planetarion_backup_.*(\.gz|\.sql|\.age)$/.test(n))!;
    return {
      name,
      bytes: Number(execFileSync('stat', ['-c', '%s', join(dir, 'backups', name)], { encoding: 'utf8' })),
    };
  };
  const [plainFile, ageFile] = [fileSize(plainDir), fileSize(ageDir)];
  for (const dir of [plainDir, ageDir, keys]) rmSync(dir, { recursive: true, force: true });

  const row = (label: string, samples: { plain: Sample[]; age: Sample[] }) => {
    const [p, a] = [median(samples.plain.map((s) => s.seconds)), median(samples.age.map((s) => s.seconds))];
    const rss = (list: Sample[]) => Math.max(...list.map((s) => s.peakRssMb)).toFixed(0);
    console.log(
      `${label.padEnd(22)} ${p.toFixed(2).padStart(7)} s  ${a.toFixed(2).padStart(7)} s  ${(a / p).toFixed(3)}x   RSS ${rss(samples.plain)} / ${rss(samples.age)} MB`,
    );
    return a / p;
  };
  console.log(
    `\nage encryption, pgbench scale ${scale} (${size}), compress ${compress}, median of ${runs} interleaved runs\n`,
  );
  console.log(`files: ${plainFile.name} ${plainFile.bytes} bytes, ${ageFile.name} ${ageFile.bytes} bytes`);
  console.log(`${''.padEnd(22)} ${'plain'.padStart(9)}  ${'age'.padStart(9)}  ratio`);
  const backupRatio = row('backup-database', backup);
  row('restore-database --test', drill);
  console.log(`\ntarget: encrypted backup <= 1.10x the unencrypted one: ${backupRatio <= 1.1 ? 'met' : 'NOT MET'}`);
} finally {
  await removeDb(db);
}
