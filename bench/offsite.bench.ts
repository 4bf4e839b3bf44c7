// Benchmark: the off-site upload against `aws s3 cp` of the same file to the same loopback S3
// server (s3rver), in the same run, and the peak RSS of backup-database with off-site copies at
// pgbench scale 10 and 30 (it streams: RSS must not grow with the backup).
// Rows: the default .sql.gz and --compress none (the seed's plain .sql, ~30x larger).
// Run: npx tsx bench/offsite.bench.ts   (needs the test bed; aws: Debian's awscli)
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cleanEnv, distBin } from '../test/helpers/cli.ts';
import { psql, removeDb, startDb } from '../test/helpers/db.ts';
import { s3Credentials, startS3 } from '../test/helpers/s3.ts';
import { makeTempDir } from '../test/helpers/tmp.ts';
import { measure, median, pgbenchInit, type Sample } from './measure.ts';

const runs = Number(process.env.BENCH_RUNS ?? 3);
const scales = (process.env.BENCH_SCALES ?? '10,30').split(',').map(Number);
const aws = ['/usr/bin/aws', 'aws'].find((a) => a === 'aws' || existsSync(a))!;
const s3 = await startS3();
let prefixes = 0;

interface Row {
  scale: number;
  compress: string;
  bytes: number;
  backupRss: number;
  loggedUpload: number;
  tool: Sample;
  aws: Sample;
}

/** The two uploads of one file, interleaved, each to a key of its own: the same server, the same minute. */
async function timeUploads(file: string, env: NodeJS.ProcessEnv) {
  const upload = (script: string, key: string, extra: NodeJS.ProcessEnv = {}) =>
    measure(process.execPath, ['--import', 'tsx', script, file, `s3://${s3.bucket}/${key}`, s3.endpoint], {
      env: { ...env, ...extra },
    });
  const tool: Sample[] = [];
  const cli: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    tool.push(await upload('bench/offsite-upload.ts', `tool-${prefixes}-${i}`, { PLANETARION_OFFSITE: '' }));
    cli.push(
      await measure(
        aws,
        [
          's3',
          'cp',
          '--only-show-errors',
          '--endpoint-url',
          s3.endpoint,
          file,
          `s3://${s3.bucket}/aws-${prefixes}-${i}/${file.split('/').pop()}`,
        ],
        { env: { ...env, AWS_DEFAULT_REGION: 'us-east-1' } },
      ),
    );
  }
  return { tool, cli };
}

async function benchFormat(db: string, scale: number, compress: string): Promise<Row> {
  const work = makeTempDir('planetarion-bench-offsite-');
  try {
    const env = cleanEnv({
      PLANETARION_DIR: work,
      PLANETARION_DB_CONTAINER: db,
      PLANETARION_COMPRESS: compress,
      PLANETARION_FINGERPRINT: 'off',
      PLANETARION_KEEP: '1',
      PLANETARION_OFFSITE: `s3://${s3.bucket}/bench-${++prefixes}`,
      PLANETARION_S3_ENDPOINT: s3.endpoint,
      ...s3Credentials,
      HOME: work,
    });
    const backups: Sample[] = [];
    for (let i = 0; i < runs; i++) backups.push(await measure(join(distBin, 'backup-database'), [], { env }));
    const logged = [
      ...readFileSync(join(work, 'logs/backup.log'), 'utf8').matchAll(
        /Off-site copy of \S+ confirmed .* in ([\d.]+) s/g,
      ),
    ].map((m) => Number(m[1]));
    const file = join(
      work,
      'backups',
      readdirSync(join(work, 'backups')).find((f) => /^planetarion_backup_\d{8}_\d{6}\.sql(\.gz)?$/.test(f))!,
    );
    const { tool, cli } = await timeUploads(file, env);
    const pick = (samples: Sample[]) => ({
      seconds: median(samples.map((s) => s.seconds)),
      peakRssMb: Math.max(...samples.map((s) => s.peakRssMb)),
    });
    const { size } = statSync(file);
    return {
      scale,
      compress,
      bytes: size,
      backupRss: Math.max(...backups.map((s) => s.peakRssMb)),
      loggedUpload: median(logged),
      tool: pick(tool),
      aws: pick(cli),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const rows: Row[] = [];
const loadBefore = loadavg()[0]!;
try {
  for (const scale of scales) {
    const db = `pb-bench-offsite-s${scale}`;
    await startDb(db, { timeoutMs: 240_000 });
    try {
      process.stderr.write(`scale ${scale}: pgbench -i ...\n`);
      await pgbenchInit(db, scale);
      await psql(db, 'SELECT 1');
      for (const compress of ['gzip', 'none']) rows.push(await benchFormat(db, scale, compress));
    } finally {
      await removeDb(db);
    }
  }
} finally {
  await s3.stop();
}

const awsVersion = execFileSync(aws, ['--version'], { encoding: 'utf8' }).trim();
console.log(
  `\noff-site upload (file + manifest + .sha256, confirmed) vs '${aws} s3 cp' of the file alone (${awsVersion}); s3rver on loopback; median of ${runs}\n`,
);
console.log(`load average (1 min): ${loadBefore.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end\n`);
console.log(
  'scale  format    size      upload in backup-database   tool upload process (RSS)   aws s3 cp (RSS)      ratio   backup-database peak RSS',
);
const secondsAndRss = (s: Sample) => `${s.seconds.toFixed(2).padStart(6)} s (${s.peakRssMb.toFixed(0)} MB)`;
for (const r of rows) {
  console.log(
    `${String(r.scale).padStart(5)}  ${r.compress.padEnd(8)} ${(r.bytes / 1e6).toFixed(1).padStart(6)} MB  ${r.loggedUpload.toFixed(2).padStart(8)} s                 ${secondsAndRss(r.tool)}          ${secondsAndRss(r.aws)}   ${(r.tool.seconds / r.aws.seconds).toFixed(2)}x   ${r.backupRss.toFixed(0)} MB`,
  );
}
for (const compress of ['gzip', 'none']) {
  const [small, large] = [
    rows.find((r) => r.compress === compress && r.scale === scales[0]),
    rows.find((r) => r.compress === compress && r.scale === scales[scales.length - 1]),
  ];
  if (small && large && small !== large)
    console.log(
      `backup-database peak RSS with off-site, ${compress}: scale ${large.scale} / scale ${small.scale} = ${(large.backupRss / small.backupRss).toFixed(2)}x`,
    );
}
console.log('targets: upload within 1.3x of aws s3 cp; peak RSS flat from scale 10 to 30');
