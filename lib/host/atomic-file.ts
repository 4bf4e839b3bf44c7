// Durable file replacement: write a temp file, fsync it, rename it over the target, fsync the
// directory. A crash leaves either the old file or the new one, never half of either. Every
// file is created with O_EXCL and O_NOFOLLOW under a random name, so a symlink planted at a
// predictable name in a shared folder is never followed, and the rename replaces a planted
// link itself rather than writing through it.
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, linkSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** open() flags that create a new file and never follow a symlink at its name. */
export const createNewFileFlags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** fsyncs a directory, so a rename or unlink in it survives a power cut. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A hidden, unguessable temp name beside `path`; the pid lets a later run tell whose it was. */
export function tempPathFor(path: string, pid = process.pid): string {
  return join(dirname(path), `.${basename(path)}.tmp-${pid}-${randomBytes(6).toString('hex')}`);
}

/** Creates a new file at `path` (never an existing one, never through a symlink) holding `data`, fsynced. */
export function writeNewFile(path: string, data: string | Buffer, mode = 0o600): void {
  const fd = openSync(path, createNewFileFlags, mode);
  try {
    const buffer = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buffer.length; ) off += writeSync(fd, buffer, off);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(path);
    throw error;
  }
  closeSync(fd);
}

/** Replaces `path` with `data` atomically and durably (mode 0600 unless told otherwise). */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): void {
  const temp = tempPathFor(path);
  writeNewFile(temp, data, mode);
  try {
    renameSync(temp, path);
  } catch (error) {
    unlinkSync(temp); // an immutable or vanished target must not leave the temp file behind
    throw error;
  }
  fsyncDir(dirname(path));
}

/**
 * The file-system calls placeNoReplace makes. The test bed has no filesystem without hard
 * links (no vfat or exFAT driver), so the unit test passes a `link` that fails as they do.
 */
export interface PlaceCalls {
  link(existing: string, target: string): void;
  rename(from: string, to: string): void;
  createEmpty(path: string): void;
  unlink(path: string): void;
}

export const fsPlaceCalls: PlaceCalls = {
  link: linkSync,
  rename: renameSync,
  createEmpty: (path) => closeSync(openSync(path, createNewFileFlags, 0o600)),
  unlink: unlinkSync,
};

/** link() errors of a filesystem without hard links (exFAT, FAT, some SMB mounts). */
const noHardLinks = new Set(['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'ENOSYS']);

const errnoOf = (error: unknown) => (error as NodeJS.ErrnoException).code ?? '';

/**
 * Moves `temp` to `target` unless `target` exists: true when placed, false (temp untouched)
 * when the name is taken. link() fails rather than replacing, unlike rename(). Where the
 * filesystem has no hard links, renameat2(RENAME_NOREPLACE) would do, but Node does not expose
 * it: an empty placeholder created with O_EXCL claims the name, and the rename then replaces
 * only that placeholder, never a file someone else made.
 */
export function placeNoReplace(temp: string, target: string, calls: PlaceCalls = fsPlaceCalls): boolean {
  try {
    calls.link(temp, target);
  } catch (error) {
    if (errnoOf(error) === 'EEXIST') return false;
    if (!noHardLinks.has(errnoOf(error))) throw error;
    try {
      calls.createEmpty(target);
    } catch (placeholderError) {
      if (errnoOf(placeholderError) === 'EEXIST') return false;
      throw placeholderError;
    }
    calls.rename(temp, target);
    return true;
  }
  calls.unlink(temp);
  return true;
}
