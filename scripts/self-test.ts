import { defineCommand } from '../lib/cli/command.ts';

/** `planetarion self-test`: proves this executable runs commands correctly on this host. */
export const selfTest = defineCommand(
  {
    name: 'self-test',
    usage: '[--json]',
    description: 'Runs a shell pipeline through /bin/sh with hard-to-quote arguments and checks they arrive intact.',
    flags: [],
    settings: [],
    dryRun: false,
    maxPositionals: 0,
    examples: ['planetarion self-test', 'planetarion self-test --json'],
  },
  async ({ json }) => {
    const { runSelfTest } = await import('../lib/host/self-test.ts');
    const result = await runSelfTest();
    process.stdout.write(
      json
        ? `${JSON.stringify(result)}\n`
        : `self-test passed: ${result.version} on ${result.arch} (${result.processArch} build), node ${result.node}\n`,
    );
  },
);
