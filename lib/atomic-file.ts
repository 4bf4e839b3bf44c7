// Durable file replacement: write a temp file, fsync it, rename it over the target, fsync the
// directory. A crash leaves either the old file or the new one, never half of either.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** fsyncs a directory, so a rename or unlink in it survives a power cut. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replaces `path` with `data` atomically and durably (mode 0600 unless told otherwise). */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): void {
  const temp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  const fd = openSync(temp, 'w', mode);
  try {
    const buffer = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buffer.length; ) off += writeSync(fd, buffer, off);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temp);
    throw error;
  }
  closeSync(fd);
  try {
    renameSync(temp, path);
  } catch (error) {
    unlinkSync(temp); // an immutable or vanished target must not leave the temp file behind
    throw error;
  }
  fsyncDir(dirname(path));
}
