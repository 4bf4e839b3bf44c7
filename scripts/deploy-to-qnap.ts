import type { Command } from '../lib/command.ts';
import { CliError } from '../lib/errors.ts';
import { toolVersion } from '../lib/version.ts';

export const deployToQnap: Command = {
  name: 'deploy-to-qnap',
  summary: 'not built yet',
  async run(argv) {
    if (argv.includes('--version')) return void process.stdout.write(`${toolVersion}\n`);
    if (argv.includes('--help')) return void process.stdout.write('Usage: deploy-to-qnap [options]\n');
    throw new CliError('deploy-to-qnap is not built yet');
  },
};
