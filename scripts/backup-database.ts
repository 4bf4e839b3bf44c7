import { join } from 'node:path';
import { defineCommand } from '../lib/cli/command.ts';
import { UsageError } from '../lib/errors.ts';
import { backupLogName } from '../lib/paths.ts';

export const backupDatabase = defineCommand(
  {
    name: 'backup-database',
    usage: '[options]',
    description: [
      'Dumps the database from inside its container in one consistent snapshot, verifies the',
      'dump (exit status, size, completion trailer, gzip integrity, sha256), moves it into place as',
      'planetarion_backup_YYYYMMDD_HHMMSS.sql.gz with a manifest and a .sha256, and only then',
      'removes backups beyond the newest N. Newest goes by the sequence number each manifest records',
      '(never by a clock). Rotation deletes nothing when the new backup looks like lost data (under half',
      'the size of the previous one, or a table of 100+ rows lost over half, or one of 10+ rows emptied),',
      'and never the newest backup that passed a restore drill; --status says why it was held. The old',
      "shell scripts' .sql backups (listed by --status as old script backups, which carry no proof) are",
      'removed only once N backups of this tool exist.',
      'Every step is logged with a timestamp to <logs>/backup.log. The base, backup and log folders must',
      'be writable by their owner only (chmod 700).',
      'With PLANETARION_AGE_RECIPIENTS set, the dump is encrypted with age as it streams (.sql.gz.age):',
      'nothing unencrypted reaches the disk, and only the public keys need to be on the NAS.',
      'With PLANETARION_OFFSITE=s3://BUCKET/PREFIX, every verified backup is then also uploaded (with its',
      'manifest and .sha256) and confirmed by the server; backups not yet off-site are caught up, and off-site',
      'rotation keeps the newest PLANETARION_OFFSITE_KEEP. An off-site failure leaves the local backup good and',
      'exits 1. S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or a',
      'credentials file (AWS_SHARED_CREDENTIALS_FILE); never on the command line.',
    ].join('\n'),
    flags: [
      {
        name: 'status',
        type: 'boolean',
        description:
          'list the backups on disk (newest first, checksum verified), the last run, and why rotation was held',
      },
      { name: 'offsite', type: 'boolean', description: 'with --status: also list the backups in the off-site bucket' },
    ],
    settings: [
      'dir',
      'backupDir',
      'logDir',
      'container',
      'dbUser',
      'dbName',
      'keep',
      'format',
      'compress',
      'fingerprint',
      'fingerprintExclude',
      'pingUrl',
      'ageRecipients',
      'docker',
      'offsite',
      's3Endpoint',
      's3Region',
      's3PathStyle',
      'offsiteKeep',
      's3Timeout',
      's3CredentialsFile',
    ],
    dryRun: true,
    maxPositionals: 0,
    examples: [
      'backup-database                      # what cron runs at 02:00, 10:00 and 18:00',
      'backup-database --status',
      'backup-database --status --offsite      # also what is in the bucket',
      'PLANETARION_AGE_RECIPIENTS=/share/CACHEDEV1_DATA/planetarion/age-recipients.txt backup-database',
      'backup-database --dry-run --container planetarion-db',
      'PLANETARION_DIR=/share/CACHEDEV1_DATA/planetarion backup-database --compress none --json',
    ],
  },
  async ({ flags, settings, json, dryRun }) => {
    // Loaded here, not at the top: --help and --version answer without them (scripts/cli.ts).
    if (flags.status) {
      const { backupStatus, renderBackupStatus } = await import('../lib/store/backup-status.ts');
      const report = await backupStatus(settings.dir, settings.backupDir);
      // The off-site client (and the AWS SDK behind it) is loaded only when the report asks the bucket.
      const [{ offsiteReport, renderOffsiteReport }, { offsiteConfig }] = await Promise.all([
        import('../lib/offsite/status.ts'),
        import('../lib/offsite/config.ts'),
      ]);
      const offsite = await offsiteReport(settings, report.status, flags.offsite === true);
      if (flags.offsite && !offsite)
        throw new UsageError(
          '--offsite: PLANETARION_OFFSITE is not set',
          'Set PLANETARION_OFFSITE=s3://BUCKET/PREFIX (backup-database --help).',
        );
      process.stdout.write(
        json
          ? `${JSON.stringify({ ...report, ...(offsite ? { offsite } : {}) }, null, 2)}\n`
          : renderBackupStatus(report.backups, report.status, settings.backupDir, report.warnings) +
              (offsite ? renderOffsiteReport(offsite, offsiteConfig(settings)) : ''),
      );
      return;
    }
    if (flags.offsite)
      throw new UsageError('--offsite goes with --status', "Run 'backup-database --status --offsite'.");
    const [
      { checkBackupDirectories, runBackup },
      { formatBytes },
      { locateDocker },
      { Logger },
      { createShell },
      { reconcileIfIdle },
      { CliError, errorText },
      { checkOffsite },
    ] = await Promise.all([
      import('../lib/backup/run.ts'),
      import('../lib/format.ts'),
      import('../lib/host/docker-binary.ts'),
      import('../lib/log.ts'),
      import('../lib/host/shell.ts'),
      import('../lib/deploy/switch.ts'),
      import('../lib/errors.ts'),
      import('../lib/offsite/copy.ts'),
    ]);
    const folderNotes = checkBackupDirectories(settings, !dryRun);
    const log = new Logger({ file: dryRun ? undefined : join(settings.logDir, backupLogName) });
    for (const note of folderNotes) log.warn(note);
    const docker = locateDocker({ explicit: settings.docker });
    const tty = process.stderr.isTTY === true;
    const started = Date.now();
    const $ = createShell();
    // A switch that a killed deployment left half done is put right first: the backup is then of the live database.
    if (!dryRun)
      await reconcileIfIdle({ dir: settings.dir, docker, $, log }, 'backup-database').catch((error: unknown) =>
        log.warn(`Could not reconcile the deploy switch journal: ${errorText(error)}`),
      );
    const summary = await runBackup({
      settings,
      docker,
      $,
      log,
      dryRun,
      onProgress: tty
        ? (bytes) =>
            process.stderr.write(
              `\r  dumped ${formatBytes(bytes)} (${formatBytes(bytes / Math.max(0.001, (Date.now() - started) / 1000))}/s)   `,
            )
        : undefined,
    });
    if (tty && !dryRun) process.stderr.write('\n');
    if (dryRun) await checkOffsite(settings, log);
    if (json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    if (summary.offsite?.ok === false) {
      throw new CliError(`the off-site copy to ${summary.offsite.url} failed: ${summary.offsite.error}`, {
        advice: `The local backup ${summary.file} is good (verified, in ${settings.backupDir}); the next run uploads what is missing.`,
      });
    }
  },
);
