import type { Command } from '../lib/command.ts';
import { CliError } from '../lib/errors.ts';
import { toolVersion } from '../lib/version.ts';

export const backupDatabase: Command = {
  name: 'backup-database',
  summary: 'not built yet',
  async run(argv) {
    if (argv.includes('--version')) return void process.stdout.write(`${toolVersion}\n`);
    if (argv.includes('--help')) return void process.stdout.write('Usage: backup-database [options]\n');
    throw new CliError('backup-database is not built yet');
  },
};
