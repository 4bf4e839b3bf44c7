import { CliError } from '../errors.ts';
import { createShell } from './shell.ts';
import { toolVersion } from '../version.ts';

/** Values that break naive quoting: the self-test round-trips them through /bin/sh. */
const trickyValues = [`it's`, 'two  spaces', '$HOME', '`id`', 'a"b', 'semi;colon', 'new\nline', ''];

export interface SelfTestResult {
  ok: boolean;
  version: string;
  /** `uname -m` of the machine the shell runs on. */
  arch: string;
  /** The architecture this executable was built for (Node's name). */
  processArch: string;
  node: string;
  shell: string;
}

/**
 * Runs a shell pipeline through zx with tricky arguments and checks they arrive intact.
 * deploy-to-qnap runs this on the NAS after uploading, before trusting the executables there.
 */
export async function runSelfTest(): Promise<SelfTestResult> {
  const $ = createShell();
  const out = await $`for v in ${trickyValues}; do printf '[%s]\\n' "$v"; done | cat`;
  const expected = `${trickyValues.map((v) => `[${v}]`).join('\n')}\n`;
  const arch = (await $`uname -m`).stdout.trim();
  const result = {
    ok: out.stdout === expected,
    version: toolVersion,
    arch,
    processArch: process.arch,
    node: process.version,
    shell: '/bin/sh',
  };
  if (!result.ok) throw new CliError(`quoting round-trip through /bin/sh failed: got ${JSON.stringify(out.stdout)}`);
  return result;
}
