import type { Command } from '../lib/command.ts';
import { CliError } from '../lib/errors.ts';
import { toolVersion } from '../lib/version.ts';

export const restoreDatabase: Command = {
  name: 'restore-database',
  summary: 'not built yet',
  async run(argv) {
    if (argv.includes('--version')) return void process.stdout.write(`${toolVersion}\n`);
    if (argv.includes('--help')) return void process.stdout.write('Usage: restore-database [options]\n');
    throw new CliError('restore-database is not built yet');
  },
};
