// The single entry point bundled into the executable. Each command name on the NAS is a
// launcher that starts this executable with --argv0 set to its own path, so the command is
// the name it was invoked by; `planetarion <command> ...` works too.
import { basename } from 'node:path';
import type { Command } from '../lib/command.ts';
import { UsageError } from '../lib/errors.ts';
import { runMain } from '../lib/run-main.ts';
import { toolVersion } from '../lib/version.ts';
import { backupDatabase } from './backup-database.ts';
import { restoreDatabase } from './restore-database.ts';
import { setupBackupCron } from './setup-backup-cron.ts';
import { deployToQnap } from './deploy-to-qnap.ts';
import { selfTest } from './self-test.ts';

const commands: Command[] = [backupDatabase, restoreDatabase, setupBackupCron, deployToQnap, selfTest];

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    `planetarion-backup ${toolVersion}`,
    '',
    'Usage: planetarion <command> [options]   (or run a command by its own name)',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    "Run 'planetarion <command> --help' for a command's options.",
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const invokedAs = basename(process.argv0 ?? '');
  const byName = commands.find((c) => c.name === invokedAs);
  const args = process.argv.slice(2);
  if (byName) return byName.run(args);
  const [first, ...rest] = args;
  const command = commands.find((c) => c.name === first);
  if (command) return command.run(rest);
  // build.mjs asks which launchers to make: one per user-facing command.
  if (first === '--list-launchers') return void process.stdout.write(['planetarion', ...commands.filter((c) => c !== selfTest).map((c) => c.name)].join('\n') + '\n');
  if (first === '--version' || first === '-v') return void process.stdout.write(`${toolVersion}\n`);
  if (first === undefined || first === '--help' || first === '-h') return void process.stdout.write(usage());
  throw new UsageError(`unknown command '${first}'`, `Commands: ${commands.map((c) => c.name).join(', ')}`);
}

void runMain(main);
