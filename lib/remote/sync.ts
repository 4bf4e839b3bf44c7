// The sources a compose file bind-mounts by relative path (`./src:/app/src:ro`) and the build
// contexts of --build-on-nas, mirrored from the workstation to <dir>/deploy/sync on the NAS: only
// the files whose content, mode or link target changed travel (a tar stream over SSH, since a
// NAS may have no rsync), files gone here are removed there, and a manifest written last says what
// the mirror holds. The mirror is never mounted: each new slot copies it into its own folder
// (deploy/slot-compose.ts), so the code the live slot mounts never changes before the switch.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CliError, UsageError } from '../errors.ts';
import { uploadFile } from './upload.ts';
import { syncRoot } from '../deploy/relative-binds.ts';
import type { Ssh } from './ssh.ts';

const manifestName = '.manifest.json';
/** Never synced, never part of a content tag: version control, installed dependencies, bytecode caches. */
export const syncExcludes: ReadonlySet<string> = new Set(['.git', 'node_modules', '__pycache__']);

/** What one path is, for the manifest: a file's mode and content hash, a link's target. */
type Manifest = Record<string, string>;

function describeEntry(full: string): string | undefined {
  const stat = lstatSync(full);
  if (stat.isSymbolicLink()) return `l:${readlinkSync(full)}`;
  if (stat.isFile())
    return `f:${(stat.mode & 0o7777).toString(8)}:${createHash('sha256').update(readFileSync(full)).digest('hex')}`;
  return undefined;
}

/** Every file and link under `root/path` (the path itself if it is a file), by path relative to root, without the excludes. */
export function localManifest(root: string, paths: readonly string[]): Manifest {
  const manifest: Manifest = {};
  const visit = (rel: string) => {
    const full = join(root, rel);
    const stat = lstatSync(full, { throwIfNoEntry: false });
    if (!stat) return;
    if (stat.isDirectory()) {
      for (const name of readdirSync(full).sort())
        if (!syncExcludes.has(name)) visit(rel === '.' ? name : `${rel}/${name}`);
      return;
    }
    const entry = describeEntry(full);
    if (entry) manifest[rel] = entry;
  };
  for (const path of paths) {
    if (!lstatSync(join(root, path), { throwIfNoEntry: false }))
      throw new UsageError(
        `${join(root, path)} does not exist`,
        'The compose file bind-mounts or builds from it; create it or fix the path. Nothing was changed.',
      );
    visit(path);
  }
  return manifest;
}

/** A content hash of the files under the given paths (the manifest's lines, sorted). */
export function treeHash(manifest: Manifest): string {
  const hash = createHash('sha256');
  for (const key of Object.keys(manifest).sort()) hash.update(`${key}\0${manifest[key]}\n`);
  return hash.digest('hex');
}

export interface SyncResult {
  paths: string[];
  total: number;
  changed: string[];
  removed: string[];
  /** The mirror on the NAS. */
  root: string;
}

/** What the mirror holds now (its manifest), or nothing when it was never synced or is unreadable. */
async function remoteManifest(ssh: Ssh, root: string): Promise<Manifest> {
  const read = await ssh.run(['cat', `${root}/${manifestName}`]);
  if (read.exitCode !== 0) return {};
  try {
    return JSON.parse(read.stdout) as Manifest;
  } catch {
    return {};
  }
}

/** Streams the files named in `files` (relative to `root`) with tar into the NAS's mirror. */
async function sendFiles(ssh: Ssh, root: string, files: string[], remoteRoot: string): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), 'planetarion-sync-'));
  try {
    const list = join(scratch, 'files');
    writeFileSync(list, files.map((f) => `${f}\0`).join(''), { mode: 0o600 });
    await ssh.check(['mkdir', '-p', '-m', '700', remoteRoot], `creating ${remoteRoot}`);
    const tar = spawn('tar', ['-c', '-f', '-', '-C', root, '--no-recursion', '--null', '-T', list], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tarErr = '';
    tar.stderr.setEncoding('utf8').on('data', (d: string) => (tarErr += d));
    const tarDone = new Promise<number>((r) => {
      tar.on('error', () => r(127));
      tar.on('close', (code) => r(code ?? 1));
    });
    // -o: the NAS user owns what it extracts (the workstation's uid means nothing there).
    const extracted = await ssh
      .stream(['tar', '-x', '-o', '-f', '-', '-C', remoteRoot], { stdin: tar.stdout })
      .catch((error: unknown) => {
        tar.kill();
        throw error;
      });
    const tarCode = await tarDone;
    if (tarCode !== 0)
      throw new CliError(
        `tar of the sources failed here (exit ${tarCode}): ${tarErr.trim().split('\n').slice(-3).join(' ')}`,
      );
    if (extracted !== 0)
      throw new CliError(`extracting the sources into ${remoteRoot} failed on the NAS (exit ${extracted})`, {
        advice: 'Check the free space and permissions of that folder on the NAS.',
      });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * Mirrors `paths` (relative to the compose folder `root`) to <dir>/deploy/sync on the NAS: the
 * changed files only, removals after, the manifest last (an interrupted sync sends again).
 * With dryRun, only says what would travel.
 */
export async function syncSources(
  ssh: Ssh,
  root: string,
  paths: readonly string[],
  projectDir: string,
  options: { dryRun: boolean },
): Promise<SyncResult> {
  const remoteRoot = syncRoot(projectDir);
  const local = localManifest(root, paths);
  const remote = await remoteManifest(ssh, remoteRoot);
  const changed = Object.keys(local).filter((p) => remote[p] !== local[p]);
  const inPaths = (p: string) => paths.some((path) => path === '.' || p === path || p.startsWith(`${path}/`));
  const removed = Object.keys(remote).filter((p) => !(p in local) && inPaths(p));
  const result = { paths: [...paths], total: Object.keys(local).length, changed, removed, root: remoteRoot };
  if (options.dryRun || (!changed.length && !removed.length)) return result;
  if (changed.length) await sendFiles(ssh, root, changed, remoteRoot);
  for (let i = 0; i < removed.length; i += 200) {
    await ssh.check(
      ['sh', '-c', 'cd "$1" && shift && rm -f -- "$@"', 'sh', remoteRoot, ...removed.slice(i, i + 200)],
      `removing deleted sources from ${remoteRoot}`,
    );
  }
  const kept = Object.fromEntries(Object.entries(remote).filter(([p]) => !inPaths(p)));
  const scratch = mkdtempSync(join(tmpdir(), 'planetarion-sync-'));
  try {
    writeFileSync(join(scratch, manifestName), JSON.stringify({ ...kept, ...local }), { mode: 0o600 });
    await uploadFile(ssh, join(scratch, manifestName), `${remoteRoot}/${manifestName}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return result;
}
