// setup-backup-cron's work once its flags and settings are read (scripts/setup-backup-cron.ts holds the spec and the help).
import { UsageError } from '../errors.ts';
import type { Invocation } from '../cli/command.ts';

export async function setupBackupCronCommand({ flags, settings, json, dryRun, terminal }: Invocation): Promise<void> {
  if (flags.uninstall && flags.status) throw new UsageError('--uninstall and --status cannot be combined');
  const [
    { backupCronStatus, installBackupCron, renderCronSetup, resolveRoot, selfTestFailure, uninstallBackupCron },
    { createShell },
  ] = await Promise.all([import('../cron/setup.ts'), import('../host/shell.ts')]);
  const options = {
    settings,
    $: createShell(),
    env: process.env,
    root: resolveRoot(flags.root as string | undefined),
    binary: flags.binary as string | undefined,
    drill: flags['no-drill'] !== true,
    skipTest: flags['skip-test'] === true,
    dryRun,
    progress: (line: string) => void terminal.err(`${line}\n`),
  };
  const result = flags.status
    ? await backupCronStatus(options)
    : flags.uninstall
      ? await uninstallBackupCron(options)
      : await installBackupCron(options);
  terminal.out(json ? `${JSON.stringify(result, null, 2)}\n` : renderCronSetup(result));
  if (result.selfTest && !result.selfTest.ok) throw selfTestFailure(result);
}
