import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'uvu';

/** A fresh private temp dir; remove it with removeTempDir. */
export function makeTempDir(prefix = 'planetarion-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Removes a temp dir made by makeTempDir, whatever it holds. */
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** The temp dirs a suite makes, removed together in its `after` hook. */
export class TempDirs {
  private readonly dirs: string[] = [];
  constructor(private readonly prefix: string) {}

  /** A fresh private temp dir, remembered for removeAll. */
  make(prefix = this.prefix): string {
    const dir = makeTempDir(prefix);
    this.dirs.push(dir);
    return dir;
  }

  /** Removes every dir made so far. */
  removeAll(): void {
    while (this.dirs.length) removeTempDir(this.dirs.pop()!);
  }
}

/**
 * A private temp dir for a suite: made before it (before each test with `each`) and removed after.
 * Returns a getter, since the dir exists only once the suite runs.
 */
export function suiteTempDir(s: Test, options: { prefix?: string; each?: boolean } = {}): () => string {
  let dir = '';
  const before = options.each ? s.before.each : s.before;
  const after = options.each ? s.after.each : s.after;
  before(() => {
    dir = makeTempDir(options.prefix);
  });
  after(() => removeTempDir(dir));
  return () => dir;
}
