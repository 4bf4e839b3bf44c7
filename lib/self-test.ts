import { UsageError, CliError } from './errors.ts';
import { createShell } from './shell.ts';
import { toolVersion } from './version.ts';

/** Values that break naive quoting: the self-test round-trips them through /bin/sh. */
const trickyValues = [`it's`, 'two  spaces', '$HOME', '`id`', 'a"b', 'semi;colon', 'new\nline', ''];

/**
 * Runs a shell pipeline through zx with tricky arguments and checks they arrive intact.
 * deploy-to-qnap runs this on the NAS after uploading, before trusting the executables there.
 */
export async function runSelfTest(argv: string[]): Promise<void> {
  if (argv.includes('--help')) {
    process.stdout.write(
      'Usage: planetarion self-test [--json]\n\nRuns a shell pipeline through /bin/sh with tricky quoting and checks the result.\nExit codes: 0 ok, 1 a check failed, 2 bad usage.\n',
    );
    return;
  }
  const unknown = argv.filter((a) => a !== '--json');
  if (unknown.length) throw new UsageError(`unknown argument '${unknown[0]}' for self-test`, 'Run: planetarion self-test --help');
  const $ = createShell();
  const out = await $`for v in ${trickyValues}; do printf '[%s]\\n' "$v"; done | cat`;
  const expected = trickyValues.map((v) => `[${v}]`).join('\n') + '\n';
  const arch = (await $`uname -m`).stdout.trim();
  const ok = out.stdout === expected;
  const result = { ok, version: toolVersion, arch, node: process.version, shell: '/bin/sh' };
  if (argv.includes('--json')) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write(`self-test ${ok ? 'passed' : 'FAILED'}: ${toolVersion} on ${arch}, node ${process.version}\n`);
  if (!ok) throw new CliError(`quoting round-trip through /bin/sh failed: got ${JSON.stringify(out.stdout)}`);
}
