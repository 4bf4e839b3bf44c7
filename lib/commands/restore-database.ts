// restore-database's work once its flags and settings are read (scripts/restore-database.ts holds the spec and the help).
import { join } from 'node:path';
import { UsageError } from '../errors.ts';
import { backupLogName } from '../paths.ts';
import type { Invocation } from '../cli/command.ts';

export async function restoreDatabaseCommand({
  flags,
  positionals,
  settings,
  json,
  dryRun,
  terminal,
}: Invocation): Promise<void> {
  if (flags.rollback && (flags.test || positionals.length))
    throw new UsageError('--rollback takes no file and cannot be combined with --test');
  const mode = flags.rollback ? 'rollback' : flags.test ? 'test' : 'restore';
  const [
    { readIdentityFile },
    { locateDocker },
    { Logger },
    { runRestore },
    { createShell },
    { checkBackupDirectories },
    { terminalAsk },
  ] = await Promise.all([
    import('../age.ts'),
    import('../host/docker-binary.ts'),
    import('../log.ts'),
    import('../restore/flow.ts'),
    import('../host/shell.ts'),
    import('../store/folders.ts'),
    import('../cli/prompt.ts'),
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
      : await (await import('../offsite/download.ts')).fetchFromOffsite({
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
    say: (line) => terminal.err(`${line}\n`),
    dryRun,
    fallback: flags.fallback === true,
    noVerify: flags['no-verify'] === true,
    otherDatabase: flags['other-database'] === true,
    mode,
    identities: mode !== 'rollback' && settings.ageIdentity ? readIdentityFile(settings.ageIdentity) : undefined,
  }).finally(() => fetched?.cleanup());
  if (json) terminal.out(`${JSON.stringify(result, null, 2)}\n`);
}
