// Small file helpers of the build: child processes, file lists, hashes, sizes.
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';

export const execFile = promisify(execFileCb);

export function sha256File(path) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** Every file below `dir`, recursively. */
export async function listFiles(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else out.push(path);
  }
  return out;
}

/** `sha256sum`-compatible lines (so `sha256sum -c SHA256SUMS` works, busybox's too), sorted by path. */
export async function sha256Sums(folder) {
  const files = (await listFiles(folder))
    .map((f) => relative(folder, f))
    .filter((f) => f !== 'SHA256SUMS')
    .sort();
  const lines = await Promise.all(files.map(async (f) => `${await sha256File(join(folder, f))}  ${f}\n`));
  return lines.join('');
}

export async function treeBytes(dir) {
  let total = 0;
  for (const file of await listFiles(dir)) total += (await stat(file)).size;
  return total;
}
