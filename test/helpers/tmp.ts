import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh private temp dir; remove it with removeTempDir. */
export function makeTempDir(prefix = 'planetarion-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Removes a temp dir made by makeTempDir, whatever it holds. */
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
