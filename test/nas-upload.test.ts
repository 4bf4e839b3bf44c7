import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CliError, ExitCode } from '../lib/errors.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableBuilds, choosePlatform, localBinRoot } from '../lib/remote/upload.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

function refusal(machine: string, kernel: string, available?: string[]): CliError {
  try {
    choosePlatform(machine, kernel, available);
  } catch (error) {
    assert.instance(error, CliError);
    assert.is((error as CliError).exitCode, ExitCode.failed);
    return error as CliError;
  }
  assert.unreachable(`expected ${machine} ${kernel} to be refused`);
  throw new Error('unreachable');
}

const platform = suite('choosePlatform');
platform('x86_64 and aarch64 NAS models get their build', () => {
  assert.equal(choosePlatform('x86_64\n', '4.14.24-qnap\n'), {
    machine: 'x86_64',
    kernel: '4.14.24-qnap',
    folder: 'linux-x64',
  });
  assert.is(choosePlatform('amd64', '5.10.60-qnap').folder, 'linux-x64');
  assert.is(choosePlatform('aarch64', '4.2.8').folder, 'linux-arm64');
  assert.is(choosePlatform('arm64', '6.1.0').folder, 'linux-arm64');
});
platform('an architecture without a build: says which exist', () => {
  const e = refusal('armv7l', '4.2.8');
  assert.match(e.message, "architecture 'armv7l' has no build");
  assert.match(e.advice!, 'x86_64 (linux-x64) and aarch64 (linux-arm64)');
  assert.match(e.advice!, '32-bit ARM');
  assert.match(refusal('i686', '3.10.0').message, "'i686'");
});
platform('a build this machine lacks: says how to make it', () => {
  const e = refusal('aarch64', '4.2.8', ['linux-x64']);
  assert.match(e.message, 'needs the linux-arm64 executables');
  assert.match(e.advice!, 'npm run build');
});
platform('kernel floor 3.2 (glibc 2.36)', () => {
  assert.is(choosePlatform('x86_64', '3.2.0').kernel, '3.2.0');
  assert.is(choosePlatform('x86_64', '3.12.6').kernel, '3.12.6');
  for (const old of ['3.1.10', '2.6.32-qnap', '3.0']) {
    const e = refusal('x86_64', old);
    assert.match(e.message, `kernel ${old} is older than 3.2`);
    assert.match(e.message, 'glibc 2.36');
  }
  assert.match(refusal('x86_64', 'unknown').message, "cannot read the NAS's kernel version");
});
platform.run();

const builds = suite('availableBuilds / localBinRoot');
builds('lists the build folders that hold a SHA256SUMS', () => {
  const root = makeTempDir();
  try {
    mkdirSync(join(root, 'linux-x64'));
    writeFileSync(join(root, 'linux-x64', 'SHA256SUMS'), '');
    mkdirSync(join(root, 'linux-arm64'));
    assert.equal(availableBuilds(root), ['linux-x64']);
  } finally {
    removeTempDir(root);
  }
});
builds("from source: the checkout's dist/bin", async () => {
  assert.is(await localBinRoot(), join(import.meta.dirname, '..', 'dist', 'bin'));
});
builds.run();
