// The single entry point bundled into the executable. Each command name on the NAS is a
// launcher that starts this executable with --argv0 set to its own path, so the command is
// the name it was invoked by; `planetarion <command> ...` works too.
//
// Every cron run, deploy step and rejected restore candidate pays the start, so this file loads
// nothing but the table below: a command's code is loaded only when that command runs (esbuild
// turns each `import()` into a lazily evaluated part of the one bundle, so it works inside the SEA
// executable too, where a real dynamic import would fail).
import { basename } from 'node:path';
import type { Command } from '../lib/cli/command.ts';
import { UsageError } from '../lib/errors.ts';
import { runMain } from '../lib/cli/run-main.ts';
import { toolVersion, versionLine } from '../lib/version.ts';

interface CommandEntry {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Whether the command gets its own launcher on the NAS (build.mjs asks with --list-launchers). */
  launcher: boolean;
  load(): Promise<Command>;
}

const commands: readonly CommandEntry[] = [
  {
    name: 'backup-database',
    summary: 'take a verified backup of the game database and rotate old ones',
    launcher: true,
    load: async () => (await import('./backup-database.ts')).backupDatabase,
  },
  {
    name: 'restore-database',
    summary: 'restore a backup safely: checksum first, restore beside the live database, prove, then swap',
    launcher: true,
    load: async () => (await import('./restore-database.ts')).restoreDatabase,
  },
  {
    name: 'setup-backup-cron',
    summary: 'install the backup and restore-drill cron lines so they survive a QNAP reboot, and test them',
    launcher: true,
    load: async () => (await import('./setup-backup-cron.ts')).setupBackupCron,
  },
  {
    name: 'deploy-to-qnap',
    summary: 'A-B deployment: restore a proven backup into the new containers before switching to them',
    launcher: true,
    load: async () => (await import('./deploy-to-qnap.ts')).deployToQnap,
  },
  {
    name: 'self-test',
    summary: 'check that this executable runs shell commands correctly on this machine',
    launcher: false,
    load: async () => (await import('./self-test.ts')).selfTest,
  },
];

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
  const args = process.argv.slice(2);
  const byName = commands.find((c) => c.name === invokedAs);
  if (byName) return (await byName.load()).run(args);
  const [first, ...rest] = args;
  const command = commands.find((c) => c.name === first);
  if (command) return (await command.load()).run(rest);
  // build.mjs asks which launchers to make: one per user-facing command.
  if (first === '--list-launchers')
    return void process.stdout.write(
      `${['planetarion', ...commands.filter((c) => c.launcher).map((c) => c.name)].join('\n')}\n`,
    );
  if (first === '--version' || first === '-v') return void process.stdout.write(`${versionLine()}\n`);
  if (first === undefined || first === '--help' || first === '-h') return void process.stdout.write(usage());
  throw new UsageError(`unknown command '${first}'`, `Commands: ${commands.map((c) => c.name).join(', ')}`);
}

void runMain(main);
