// Step 2: the single-executable-application blob (with a V8 code cache for its architecture) and
// its injection into a copy of the stripped Node binary.
import { chmod, copyFile, rename, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { exeName, root } from './targets.mjs';
import { execFile } from './files.mjs';
import { sdkAsset } from './sdk.mjs';

/** The sentinel Node's SEA code looks for (fixed by Node; documented in node/doc/api/single-executable-applications.md). */
const seaFuse = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/**
 * Any fixed value: V8 seeds its hash tables from it, and a random seed would make every code
 * cache, so every blob, differ (deploy skips uploading files whose SHA256SUMS entry matches).
 */
const randomSeed = '1';

/**
 * The SEA blob for one architecture, written by that architecture's Node with a code cache for it
 * (the x64 one natively, the arm64 one under qemu-aarch64), and the SDK bundle as an asset (no
 * code cache: it is compiled only when off-site is used). Paths relative to the work folder: the
 * blob records the main script's path as given, and a path with this build's pid in it would make
 * every build's executable different.
 */
export async function seaBlob(target, node, work, { bundlePath, sdkPath }) {
  const configPath = join(work, `sea-config-${target.arch}.json`);
  const blobPath = join(work, `${exeName}-${target.arch}.blob`);
  const config = {
    main: relative(work, bundlePath),
    output: relative(work, blobPath),
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
    assets: { [sdkAsset]: relative(work, sdkPath) },
    // A cache the running Node rejects (a V8 flag in NODE_OPTIONS, another CPU's V8) costs only the
    // compile it would have saved, but Node warns about it, synchronously and before any of our
    // code runs, with the plain type 'Warning': cron would log or mail it on every run. Deprecation
    // and experimental warnings keep printing.
    execArgv: ['--disable-warning=Warning'],
  };
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`);
  const [command, ...args] = target.runNode(node);
  await execFile(
    command,
    [...args, `--random-seed=${randomSeed}`, '--experimental-sea-config', relative(work, configPath)],
    { cwd: work },
  );
  return blobPath;
}

/** Writes `exe`: a copy of the stripped Node binary with the blob injected, made executable, placed atomically. */
export async function injectBlob(strippedNode, blobPath, exe) {
  await copyFile(strippedNode, `${exe}.part`);
  // postject's own CLI in a child process: its WebAssembly LIEF is synchronous and would
  // otherwise serialise the two architectures on this process's one thread.
  await execFile(process.execPath, [
    join(root, 'node_modules/postject/dist/cli.js'),
    `${exe}.part`,
    'NODE_SEA_BLOB',
    blobPath,
    '--sentinel-fuse',
    seaFuse,
  ]);
  await chmod(`${exe}.part`, 0o755);
  await rename(`${exe}.part`, exe);
}
