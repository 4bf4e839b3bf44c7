// Step 3: an architecture's folder dist/bin/linux-<arch>/: runtime/ (the executable plus its own
// dynamic loader and C/C++ libraries), one /bin/sh launcher per command name, and SHA256SUMS.
//
// Why the folder carries its own loader and libraries: QTS 5.2.6 still ships glibc 2.21, official
// Node binaries need glibc 2.28. The only host requirement left is a Linux kernel >= 3.2 and
// /bin/sh (busybox is fine).
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, realpath, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exeName, pkg } from './targets.mjs';
import { execFile, sha256Sums, treeBytes } from './files.mjs';
import { injectBlob } from './sea.mjs';

/**
 * Builds <work>/linux-<arch>/ from the stripped base binary and the blob; returns its size figures.
 * Always rebuilt from scratch: injection takes a few seconds per architecture, so skipping it for
 * an unchanged blob is not worth the risk of shipping a stale executable.
 */
export async function buildFolder({ target, strippedNode, blobPath, work, launcherNames }) {
  const folder = join(work, `linux-${target.arch}`);
  const runtime = join(folder, 'runtime');
  const exe = join(runtime, exeName);
  const strippedNodeBytes = (await stat(strippedNode)).size;
  await mkdir(runtime, { recursive: true });
  await injectBlob(strippedNode, blobPath, exe);
  const libs = await copyLibraries(target, strippedNode, runtime);
  await writeLaunchers(folder, target.loader, launcherNames);
  await writeFile(join(folder, 'SHA256SUMS'), await sha256Sums(folder));
  const folderBytes = await treeBytes(folder);
  return {
    arch: target.arch,
    loader: target.loader,
    libraries: [...libs.keys()].sort(),
    strippedNodeBytes,
    executableBytes: (await stat(exe)).size,
    folderBytes,
    ratio: folderBytes / strippedNodeBytes,
  };
}

/** The loader and every library the executable needs, transitively, copied into runtime/ under its SONAME. */
async function copyLibraries(target, strippedNode, runtime) {
  const libs = await neededLibraries(strippedNode, target.libDirs);
  if (!libs.has(target.loader))
    throw new Error(`${target.arch}: the base binary does not need ${target.loader}; fix the targets table`);
  for (const [soname, path] of libs) await copyFile(path, join(runtime, soname));
  return libs;
}

async function writeLaunchers(folder, loader, launcherNames) {
  for (const name of launcherNames) {
    const launcher = join(folder, name);
    await writeFile(launcher, launcherScript(loader));
    await chmod(launcher, 0o755);
  }
}

/**
 * The /bin/sh launcher every command name gets. It resolves its own folder through links (so a
 * symlink in /usr/local/bin works), then runs the executable through the bundled loader so the
 * host's C library is never used. `--argv0 "$0"` makes process.argv0 the name it was invoked by,
 * which is what scripts/cli.ts dispatches on. Busybox sh and readlink -f are enough. readlink
 * runs only when "$0" is a link or a bare name (`sh backup-database`): its fork and exec are
 * paid by every cron run, and a folder reached through a linked directory needs no resolving.
 */
function launcherScript(loader) {
  return `#!/bin/sh
# planetarion-backup ${pkg.version}: runs runtime/${exeName} with its own loader and libraries
# (the NAS's glibc is too old for Node). Do not edit; regenerate with \`npm run build\`.
p=$0
case $p in */*) [ -L "$p" ] && { p=$(readlink -f "$p") || exit 127; } ;; *) p=$(readlink -f "$p") || exit 127 ;; esac
d=\${p%/*}
exec "$d/runtime/${loader}" --library-path "$d/runtime" --argv0 "$0" "$d/runtime/${exeName}" "$@"
`;
}

/**
 * SONAME -> real file for every shared library `binary` needs, transitively (readelf reads either
 * architecture; ldd would have to run the arm64 loader). Symlinks are dereferenced.
 */
export async function neededLibraries(binary, libDirs) {
  const found = new Map();
  const queue = [binary];
  while (queue.length) {
    const file = queue.shift();
    const { stdout } = await execFile('readelf', ['-d', '-W', file]);
    for (const [, soname] of stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)) {
      if (found.has(soname)) continue;
      const dir = libDirs.find((d) => existsSync(join(d, soname)));
      if (!dir)
        throw new Error(
          `${soname} (needed by ${file}) not found in ${libDirs.join(', ')}: run 'bash test/env/setup.sh build' as root`,
        );
      const path = await realpath(join(dir, soname));
      found.set(soname, path);
      queue.push(path);
    }
  }
  return found;
}
