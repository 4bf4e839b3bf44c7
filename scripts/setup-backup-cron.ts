import type { Command } from '../lib/command.ts';
import { CliError } from '../lib/errors.ts';
import { toolVersion } from '../lib/version.ts';

export const setupBackupCron: Command = {
  name: 'setup-backup-cron',
  summary: 'not built yet',
  async run(argv) {
    if (argv.includes('--version')) return void process.stdout.write(`${toolVersion}\n`);
    if (argv.includes('--help')) return void process.stdout.write('Usage: setup-backup-cron [options]\n');
    throw new CliError('setup-backup-cron is not built yet');
  },
};
