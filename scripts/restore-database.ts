import { join } from 'node:path';
import { defineCommand } from '../lib/cli/command.ts';
import { UsageError } from '../lib/errors.ts';
import { backupLogName } from '../lib/paths.ts';

export const restoreDatabase = defineCommand(
  {
    name: 'restore-database',
    usage: '[FILE | latest] [options]',
    description: [
      'Checks the file against its sha256 before touching any database, restores it into a new',
      'database beside the live one (one transaction, ON_ERROR_STOP), proves its fingerprint against',
      'the manifest, and only then swaps it in by renaming; the old database is kept as',
      '<name>_previous_<time> for --rollback. A failed attempt writes <logs>/restore_debug_<time>.json',
      'and leaves the live database as it was. FILE is a path or a name in the backup dir; default latest.',
      "The new database gets the live one's encoding, locale, owner, ACL, connection limit, comment and",
      'ALTER DATABASE settings, as the manifest recorded them. A backup of another database, or one',
      'without a fingerprint, is refused unless --other-database / --no-verify say so; so is a restore',
      'the database volume has no room for. SIGINT, SIGTERM and SIGHUP stop it at a safe point: before',
      'the rename commits it is undone, after it finished; either way the live database accepts connections.',
      'An encrypted backup (.age) needs the age identity (--identity FILE or PLANETARION_AGE_IDENTITY): it is',
      'decrypted to its end before any database is touched (wrong key, truncated or tampered: refused) and',
      'again as it streams into the container; without an identity the restore exits 2 and touches nothing.',
      '--from-offsite latest|NAME fetches the backup from PLANETARION_OFFSITE (streamed, checksum verified before',
      'any database is touched) and restores it the same way, also onto an empty backup folder (a new NAS);',
      'with --test it is the restore drill of the off-site copy.',
    ].join('\n'),
    flags: [
      {
        name: 'yes',
        type: 'boolean',
        short: 'y',
        description: 'do not ask for confirmation (required without a terminal)',
      },
      { name: 'fallback', type: 'boolean', description: 'if the file fails, try each older backup, newest first' },
      {
        name: 'no-verify',
        type: 'boolean',
        description:
          'restore a file without manifest/checksum (e.g. from the old shell script) or without a fingerprint (PLANETARION_FINGERPRINT=off): swapped in unproven',
      },
      {
        name: 'other-database',
        type: 'boolean',
        description: 'restore a backup whose manifest names another database than PLANETARION_DB_NAME',
      },
      {
        name: 'test',
        type: 'boolean',
        description:
          'restore drill: restore into a scratch database, prove the fingerprint, drop it; the live database is never touched',
      },
      { name: 'rollback', type: 'boolean', description: 'make the previous database live again (swaps back)' },
      {
        name: 'from-offsite',
        type: 'string',
        valueName: 'latest|NAME',
        description: 'fetch the backup from the off-site bucket (PLANETARION_OFFSITE) and restore that',
      },
    ],
    settings: [
      'dir',
      'backupDir',
      'logDir',
      'container',
      'dbUser',
      'dbName',
      'ageIdentity',
      'docker',
      'offsite',
      's3Endpoint',
      's3Region',
      's3PathStyle',
      's3Timeout',
      's3CredentialsFile',
    ],
    dryRun: true,
    maxPositionals: 1,
    examples: [
      'restore-database latest                 # asks before replacing the live database',
      'restore-database planetarion_backup_20231201_020000.sql.gz --yes',
      'restore-database latest --fallback --yes --json',
      'restore-database --test latest          # the weekly restore drill',
      'restore-database --rollback --yes',
      'restore-database /tmp/old.sql --no-verify --container planetarion-db-test',
      'restore-database latest --identity ~/.config/planetarion/age-key.txt --yes',
      'restore-database --from-offsite latest --yes   # the NAS is new or its backups are gone',
      'restore-database --test --from-offsite latest  # the restore drill of the off-site copy',
    ],
  },
  async ({ flags, positionals, settings, json, dryRun }) => {
    if (flags.rollback && (flags.test || positionals.length))
      throw new UsageError('--rollback takes no file and cannot be combined with --test');
    const mode = flags.rollback ? 'rollback' : flags.test ? 'test' : 'restore';
    // Loaded here, not at the top: --help and --version answer without them (scripts/cli.ts).
    const [
      { readIdentityFile },
      { locateDocker },
      { Logger },
      { runRestore },
      { createShell },
      { checkBackupDirectories },
      { terminalAsk },
    ] = await Promise.all([
      import('../lib/age.ts'),
      import('../lib/host/docker-binary.ts'),
      import('../lib/log.ts'),
      import('../lib/restore/flow.ts'),
      import('../lib/host/shell.ts'),
      import('../lib/backup/run.ts'),
      import('../lib/cli/prompt.ts'),
    ]);
    // The folders it writes in (log, diagnostics, drill results, status) are checked like the backup's.
    const folderNotes = checkBackupDirectories(settings, !dryRun);
    const log = new Logger({ file: dryRun ? undefined : join(settings.logDir, backupLogName) });
    for (const note of folderNotes) log.warn(note);
    const fromOffsite = typeof flags['from-offsite'] === 'string' ? flags['from-offsite'] : undefined;
    if (fromOffsite !== undefined && (flags.rollback || positionals.length))
      throw new UsageError('--from-offsite names the backup itself: it takes no FILE and no --rollback');
    const fetched =
      fromOffsite === undefined
        ? undefined
        : await (await import('../lib/offsite/download.ts')).fetchFromOffsite({
            settings,
            log,
            argument: fromOffsite,
            hasIdentity: settings.ageIdentity !== undefined,
            adopt: mode === 'restore' && !dryRun,
          });
    const result = await runRestore({
      settings,
      docker: locateDocker({ explicit: settings.docker }),
      $: createShell(),
      log,
      file: fetched?.path ?? positionals[0],
      yes: flags.yes === true,
      ask: terminalAsk(),
      dryRun,
      fallback: flags.fallback === true,
      noVerify: flags['no-verify'] === true,
      otherDatabase: flags['other-database'] === true,
      mode,
      identities: mode !== 'rollback' && settings.ageIdentity ? readIdentityFile(settings.ageIdentity) : undefined,
    }).finally(() => fetched?.cleanup());
    if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  },
);
