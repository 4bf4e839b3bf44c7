// Everything is built in a private work folder and moved into dist/ at the end: several people
// (and `npm test`) run builds in this checkout at once, and a half-written dist/bin/ folder or a
// blob from another build must never be shipped or tested.
import { rmSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { targets } from './targets.mjs';

/** Creates dist/.build-<pid>/, removed when this process exits, after removing those of builds that died. */
export async function openWorkFolder(dist) {
  const work = join(dist, `.build-${process.pid}`);
  await mkdir(dist, { recursive: true });
  await removeAbandonedWorkFolders(dist);
  await mkdir(work, { recursive: true });
  process.on('exit', () => rmSync(work, { recursive: true, force: true }));
  return work;
}

/** Work folders of builds that died (their process is gone); live builds' folders are left alone. */
async function removeAbandonedWorkFolders(dist) {
  for (const entry of await readdir(dist)) {
    const pid = Number(/^\.build-(\d+)$/.exec(entry)?.[1]);
    if (!pid) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (error) {
      alive = error.code === 'EPERM';
    }
    if (!alive) await rm(join(dist, entry), { recursive: true, force: true });
  }
}

/**
 * Moves the new folders, the two bundles and build-info.json from the work folder into dist/. Each
 * rename is atomic; readers see the old or the new folder, never a mix.
 */
export async function publishBuild({ work, dist, bundlePath, sdkPath, reports, selected }) {
  await mkdir(join(dist, 'bin'), { recursive: true });
  for (const r of reports)
    if (!r.kept) await replaceFolder(work, join(work, `linux-${r.arch}`), join(dist, 'bin', `linux-${r.arch}`));
  // A folder this build did not make would be from another version: never ship the two side by side.
  for (const target of targets.filter((t) => !selected.includes(t)))
    await rm(join(dist, 'bin', `linux-${target.arch}`), { recursive: true, force: true });
  await rename(bundlePath, join(dist, 'planetarion.cjs'));
  // Beside it, so the main bundle run by a plain node (outside a SEA) finds the SDK too.
  await rename(sdkPath, join(dist, basename(sdkPath)));
  // Last, so a build-info.json always describes the folders beside it (the e2e test reads it).
  await rename(join(work, 'build-info.json'), join(dist, 'build-info.json'));
}

/** Replaces `dest` (a folder) by `src`, retrying if a concurrent build publishes in between. */
async function replaceFolder(work, src, dest) {
  for (let attempt = 0; ; attempt++) {
    const old = join(work, `old-${attempt}-${dest.split('/').pop()}`);
    await rename(dest, old).catch((error) => {
      if (error.code !== 'ENOENT') throw error;
    });
    try {
      await rename(src, dest);
      await rm(old, { recursive: true, force: true });
      return;
    } catch (error) {
      if (!['ENOTEMPTY', 'EEXIST'].includes(error.code) || attempt >= 5) throw error;
    }
  }
}
