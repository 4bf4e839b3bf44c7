// The AWS SDK ships as a SEA asset, not in the main bundle (build/sdk.mjs, lib/offsite/sdk.ts): the
// main bundle holds no SDK code (every start reads its code cache), the SDK bundle is inside each
// architecture's executable, and both executables load it and talk to a real S3 server (s3rver on
// loopback) through it. Uploads through the asset are covered by offsite.e2e, which runs the x64
// executable. Runs `node build.mjs` first if dist/ is missing.
// Run: node --import tsx node_modules/uvu/bin.js test 'sdk-asset\.e2e' --no-color
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { builtinModules } from 'node:module';
import * as assert from 'node:assert/strict';
import { suite } from 'uvu';
import { cleanEnv, type ToolResult } from './helpers/cli.ts';
import { s3Credentials, startS3, type TestS3 } from './helpers/s3.ts';
import { TempDirs } from './helpers/tmp.ts';

const root = join(import.meta.dirname, '..');
const dist = join(root, 'dist');
const sdkBundle = join(dist, 'aws-sdk.cjs');
const folders = { x64: join(dist, 'bin/linux-x64'), arm64: join(dist, 'bin/linux-arm64') };

if (!existsSync(sdkBundle) || !existsSync(folders.x64) || !existsSync(folders.arm64)) {
  const r = spawnSync(process.execPath, ['build.mjs'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `node build.mjs: ${r.stderr}`);
}

/** Source paths of the SDK's packages, as esbuild's comments name every module of the (unminified) main bundle. */
const sdkModule = /node_modules\/@(aws-sdk|smithy|aws-crypto|aws)\//;

const bundles = suite('sdk asset: the bundles');

bundles('the main bundle holds no SDK code and loads the SDK from the asset', () => {
  const main = readFileSync(join(dist, 'planetarion.cjs'), 'utf8');
  assert.ok(/^\/\/ lib\/offsite\/client\.ts$/m.test(main), 'the probe sees module comments of the main bundle');
  assert.doesNotMatch(main, sdkModule, 'an SDK module inside dist/planetarion.cjs');
  assert.doesNotMatch(main, /\bclass SignatureV4\b|x-amz-content-sha256/, 'SDK code inside dist/planetarion.cjs');
  assert.match(main, /getAsset\("aws-sdk\.cjs", "utf8"\)/, 'the loader reads the asset');
});

bundles('the SDK bundle has the client and requires only Node built-in modules', () => {
  const sdk = readFileSync(sdkBundle, 'utf8');
  for (const name of ['S3Client', 'ListObjectsV2Command', 'UploadPartCommand'])
    assert.match(sdk, new RegExp(`\\b${name}\\b`), `${name} in aws-sdk.cjs`);
  const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
  // Not the one in the SDK's own error text that tells a user to `[require("@aws-sdk/signature-v4-crt");]`.
  const required = [...sdk.matchAll(/(?<!\[)\brequire\("([^"]+)"\)/g)].map((m) => m[1]!);
  assert.ok(required.length > 0, 'the probe finds the require calls');
  assert.deepEqual(
    required.filter((id) => !builtins.has(id)),
    [],
    'requires of modules that are not built in (a SEA cannot load them)',
  );
});

bundles('each executable carries the SDK bundle, byte for byte', () => {
  const sdk = readFileSync(sdkBundle);
  for (const [arch, folder] of Object.entries(folders)) {
    const exe = readFileSync(join(folder, 'runtime/planetarion'));
    assert.ok(exe.indexOf(sdk) >= 0, `linux-${arch}: dist/aws-sdk.cjs is not in runtime/planetarion`);
  }
});

bundles.run();

// --- both architectures reach S3 through the asset -----------------------------------------------------------
const talk = suite('sdk asset: the executables talk to S3 through it');
const temp = new TempDirs('planetarion-sdk-asset-');
let s3: TestS3;
const backupName = 'planetarion_backup_20261201_010203.sql.gz';

talk.before(async () => {
  s3 = await startS3();
  await s3.put(`nas/backups/${backupName}`, Buffer.from('not really gzip'), {});
});

talk.after(async () => {
  await s3?.stop();
  temp.removeAll();
});

/** Runs a program to its end with its output collected. */
function runProgram(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** `backup-database --status --offsite --json` of one architecture's executable (arm64 under qemu, as its launcher runs it). */
function offsiteStatus(arch: 'x64' | 'arm64'): Promise<ToolResult> {
  const dir = temp.make();
  const env = cleanEnv({
    PLANETARION_DIR: dir,
    HOME: dir,
    PLANETARION_OFFSITE: `s3://${s3.bucket}/nas/backups`,
    PLANETARION_S3_ENDPOINT: s3.endpoint,
    ...s3Credentials,
  });
  const args = ['--status', '--offsite', '--json'];
  if (arch === 'x64') return runProgram(join(folders.x64, 'backup-database'), args, env);
  const runtime = join(folders.arm64, 'runtime');
  const loader = ['ld-linux-aarch64.so.1', '--library-path', runtime, '--argv0', 'backup-database'];
  return runProgram(
    '/usr/bin/qemu-aarch64',
    [join(runtime, loader[0]!), ...loader.slice(1), join(runtime, 'planetarion'), ...args],
    env,
  );
}

for (const arch of ['x64', 'arm64'] as const) {
  talk(`linux-${arch}: backup-database --status --offsite lists the bucket`, async () => {
    const r = await offsiteStatus(arch);
    assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.equal(r.stderr, '', 'nothing on stderr (cron mails it)');
    const offsite = (JSON.parse(r.stdout) as { offsite: { error?: string; remote?: { file: string }[] } }).offsite;
    assert.equal(offsite.error, undefined, 'no off-site error');
    assert.deepEqual(
      offsite.remote?.map((b) => b.file),
      [backupName],
      'the object put into the bucket, listed through the SDK asset',
    );
  });
}

talk.run();
