// The build is deterministic, so a folder made from the same inputs (and still matching its
// SHA256SUMS) is kept as it is: `npm run demo` and `npm test` build every time.
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { nodeVersion, pkg, root } from './targets.mjs';
import { listFiles, sha256Sums } from './files.mjs';
import { neededLibraries } from './runtime-folder.mjs';

/** The build's own code: the driver and every module in build/. */
async function buildScripts() {
  return [join(root, 'build.mjs'), ...(await listFiles(join(root, 'build'))).sort()];
}

/** Everything one architecture's folder is made from, hashed: the two bundles, the build's code, the versions, the libraries' files. */
export async function buildKey({ target, bundlePath, sdkPath, strippedNode, launcherNames }) {
  const hash = createHash('sha256');
  for (const bundle of [bundlePath, sdkPath])
    hash.update(
      createHash('sha256')
        .update(await readFile(bundle))
        .digest(),
    );
  for (const script of await buildScripts()) hash.update(await readFile(script));
  hash.update(JSON.stringify({ arch: target.arch, version: pkg.version, nodeVersion, launcherNames }));
  for (const [soname, path] of await neededLibraries(strippedNode, target.libDirs))
    hash.update(`${soname} ${path} ${(await stat(path)).size}\n`);
  return hash.digest('hex');
}

/** dist/build-info.json of the last build, if any. */
export function previousBuildInfo(dist) {
  return readFile(join(dist, 'build-info.json'), 'utf8').then(JSON.parse, () => undefined);
}

/** The report of the folder in dist/ when a build with the same key made it and it still matches its SHA256SUMS. */
export async function currentFolder({ previousInfo, dist, target, key }) {
  const previous = previousInfo?.targets?.[target.arch];
  if (previous?.key !== key) return undefined;
  const folder = join(dist, 'bin', `linux-${target.arch}`);
  const sums = await readFile(join(folder, 'SHA256SUMS'), 'utf8').catch(() => undefined);
  if (sums === undefined || sums !== (await sha256Sums(folder))) return undefined;
  return { ...previous, kept: true };
}
