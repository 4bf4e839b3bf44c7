// The official Node binary each architecture embeds, fetched once per version and stripped.
import { chmod, copyFile, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeVersion, root } from './targets.mjs';
import { execFile } from './files.mjs';

/**
 * The official Node binary for one architecture and a stripped copy, from
 * .cache/node/<arch>-<version>/ (fetched with `npm pack` on first use, so a build with a warm
 * cache makes no network request). Stripped here, before injection, never after: strip rewrites
 * the ELF sections and drops or breaks the NODE_SEA_BLOB note postject adds.
 */
export async function baseNode(target) {
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
