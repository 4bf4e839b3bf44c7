import type { Command } from '../lib/command.ts';
import { runSelfTest } from '../lib/self-test.ts';

/** `planetarion self-test`: proves this executable runs commands correctly on this host. */
export const selfTest: Command = {
  name: 'self-test',
  summary: 'check that this executable runs shell commands correctly on this machine',
  async run(argv) {
    await runSelfTest(argv);
  },
};
