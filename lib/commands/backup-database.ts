// backup-database's work once its flags and settings are read (scripts/backup-database.ts holds the spec and the help).
import { join } from 'node:path';
import { UsageError } from '../errors.ts';
import { backupLogName } from '../paths.ts';
import type { Invocation } from '../cli/command.ts';

export async function backupDatabaseCommand({ flags, settings, json, dryRun, terminal }: Invocation): Promise<void> {
  if (flags.status) {
    const { backupStatus, renderBackupStatus } = await import('../store/backup-status.ts');
    const report = await backupStatus(settings.dir, settings.backupDir);
    // The off-site client (and the AWS SDK behind it) is loaded only when the report asks the bucket.
    const [{ offsiteReport, renderOffsiteReport }, { offsiteConfig }] = await Promise.all([
      import('../offsite/status.ts'),
      import('../offsite/config.ts'),
    ]);
    const offsite = await offsiteReport(settings, report.status, flags.offsite === true);
    if (flags.offsite && !offsite)
      throw new UsageError(
        '--offsite: PLANETARION_OFFSITE is not set',
        'Set PLANETARION_OFFSITE=s3://BUCKET/PREFIX (backup-database --help).',
      );
    terminal.out(
      json
        ? `${JSON.stringify({ ...report, ...(offsite ? { offsite } : {}) }, null, 2)}\n`
        : renderBackupStatus(report.backups, report.status, settings.backupDir, report.warnings) +
            (offsite ? renderOffsiteReport(offsite, offsiteConfig(settings)) : ''),
    );
    return;
  }
  if (flags.offsite) throw new UsageError('--offsite goes with --status', "Run 'backup-database --status --offsite'.");
  const [
    { runBackup },
    { checkBackupDirectories },
    { formatBytes },
    { locateDocker },
    { Logger },
    { createShell },
    { reconcileIfIdle },
    { CliError, errorText },
    { checkOffsite },
    { startInterruptedStopsIfIdle },
  ] = await Promise.all([
    import('../backup/run.ts'),
    import('../store/folders.ts'),
    import('../format.ts'),
    import('../host/docker-binary.ts'),
    import('../log.ts'),
    import('../host/shell.ts'),
    import('../deploy/switch.ts'),
    import('../errors.ts'),
    import('../offsite/copy.ts'),
    import('../deploy/interrupted-stops.ts'),
  ]);
  const folderNotes = checkBackupDirectories(settings, !dryRun);
  const log = new Logger({ file: dryRun ? undefined : join(settings.logDir, backupLogName) });
  for (const note of folderNotes) log.warn(note);
  const docker = locateDocker({ explicit: settings.docker });
  const tty = terminal.tty;
  const started = Date.now();
  const $ = createShell();
  // A switch that a killed deployment left half done is put right first: the backup is then of the live database.
  if (!dryRun)
    await reconcileIfIdle({ dir: settings.dir, docker, $, log }, 'backup-database').catch((error: unknown) =>
      log.warn(`Could not reconcile the deploy switch journal: ${errorText(error)}`),
    );
  // And what a deployment killed outright had stopped of the live slot runs again (the game first).
  if (!dryRun) await startInterruptedStopsIfIdle({ dir: settings.dir, docker, $, log }, 'backup-database');
  const summary = await runBackup({
    settings,
    docker,
    $,
    log,
    dryRun,
    onProgress: tty
      ? (bytes) =>
          terminal.err(
            `\r  dumped ${formatBytes(bytes)} (${formatBytes(bytes / Math.max(0.001, (Date.now() - started) / 1000))}/s)   `,
          )
      : undefined,
  });
  if (tty && !dryRun) terminal.err('\n');
  if (dryRun) await checkOffsite(settings, log);
  if (json) terminal.out(`${JSON.stringify(summary, null, 2)}\n`);
  if (summary.offsite?.ok === false) {
    throw new CliError(`the off-site copy to ${summary.offsite.url} failed: ${summary.offsite.error}`, {
      advice: `The local backup ${summary.file} is good (verified, in ${settings.backupDir}); the next run uploads what is missing.`,
    });
  }
}
