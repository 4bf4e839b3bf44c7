// Builds the standalone NAS executables: `node build.mjs` (npm run build). The steps live in build/:
//
// 1. build/bundle.mjs: esbuild bundles scripts/cli.ts (the one entry; it dispatches on the name it is
//    invoked by) into dist/planetarion.cjs. Each command's code is a lazily evaluated part of that file.
//    build/sdk.mjs: the AWS SDK (off-site copies only) is a second bundle, dist/aws-sdk.cjs, left out
//    of the first so that every start does not pay for reading its code cache.
// 2. build/sea.mjs: each architecture's own Node (the embedded version, build/base-node.mjs) writes a
//    single-executable-application (SEA) blob with a V8 code cache for that architecture and the SDK
//    bundle as an asset; postject injects it into a stripped copy of the official Node binary.
// 3. build/runtime-folder.mjs: each architecture's folder dist/bin/linux-<arch>/ gets runtime/ (the
//    executable plus its own dynamic loader and C/C++ libraries), one /bin/sh launcher per command
//    name, and SHA256SUMS. A folder made from unchanged inputs is kept (build/reuse.mjs).
// 4. build/report.mjs, build/work-folder.mjs: build-info.json, then everything moves into dist/.
//
// Usage: node build.mjs [--arch x64|arm64 ...] [--dist DIR]
//   --arch  build only these architectures (the others' folders are removed, so dist/bin never
//           mixes builds); x64 alone needs no cross tools
//   --dist  write into DIR instead of ./dist (the tests compare two builds)
//
// The embedded Node version is package.json's config.embeddedNode (build/targets.mjs). This machine
// is expected to be x64 Debian.

import { join } from 'node:path';
import { baseNode } from './build/base-node.mjs';
import { bundle, listLauncherNames } from './build/bundle.mjs';
import { checkTools, parseOptions } from './build/options.mjs';
import { overBudget, stopwatch, summaryLines, writeBuildInfo } from './build/report.mjs';
import { buildKey, currentFolder, previousBuildInfo } from './build/reuse.mjs';
import { buildFolder } from './build/runtime-folder.mjs';
import { seaBlob } from './build/sea.mjs';
import { sdkAsset, bundleSdk } from './build/sdk.mjs';
import { BuildStop, sizeBudget, targets } from './build/targets.mjs';
import { openWorkFolder, publishBuild } from './build/work-folder.mjs';

const clock = stopwatch();
const { timed } = clock;

/** One architecture's folder: kept when its inputs are unchanged, otherwise blob and folder anew. */
async function buildTarget(target, base, { work, dist, bundlePath, sdkPath, launcherNames, previousInfo }) {
  const key = await buildKey({ target, bundlePath, sdkPath, strippedNode: base.stripped, launcherNames });
  const kept = await timed(`check ${target.arch}`, () => currentFolder({ previousInfo, dist, target, key }));
  if (kept) return kept;
  const blobPath = await timed(`sea blob ${target.arch}`, () =>
    seaBlob(target, base.node, work, { bundlePath, sdkPath }),
  );
  const strippedNode = base.stripped;
  const report = await timed(`folder ${target.arch}`, () =>
    buildFolder({ target, strippedNode, blobPath, work, launcherNames }),
  );
  return { ...report, key };
}

async function main() {
  const { arches, dist } = parseOptions(process.argv.slice(2));
  const selected = targets.filter((t) => arches.includes(t.arch));
  checkTools(selected);
  const work = await openWorkFolder(dist);
  const bundlePath = join(work, 'planetarion.cjs');
  const sdkPath = join(work, sdkAsset);

  await timed('bundles', () => Promise.all([bundle(bundlePath), bundleSdk(sdkPath)]));
  const bases = {};
  for (const t of selected) bases[t.arch] = await timed(`base node ${t.arch}`, () => baseNode(t));
  const first = selected[0];
  const launcherNames = await timed('command names', () =>
    listLauncherNames(first, bases[first.arch].node, bundlePath),
  );

  // In parallel: the arm64 blob waits on qemu, and postject runs in its own process so the two
  // injections use both CPUs.
  const context = { work, dist, bundlePath, sdkPath, launcherNames, previousInfo: await previousBuildInfo(dist) };
  const reports = await Promise.all(selected.map((t) => buildTarget(t, bases[t.arch], context)));

  await writeBuildInfo(work, launcherNames, reports);
  await publishBuild({ work, dist, bundlePath, sdkPath, reports, selected });
  for (const line of summaryLines({ dist, launcherNames, reports, clock })) console.log(line);
  const over = overBudget(reports);
  if (over.length) throw new BuildStop(`over the size budget (${sizeBudget} x stripped node): ${over.join(', ')}`, 1);
}

try {
  await main();
} catch (error) {
  if (!(error instanceof BuildStop)) throw error;
  console.error(`Error: ${error.message}`);
  process.exit(error.code);
}
