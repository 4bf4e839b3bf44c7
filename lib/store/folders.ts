// The folders on the NAS the tools write in: the base dir (settings, lock, status), the backups and
// the logs. Every command checks them the same way before it touches anything.
import { accessSync, constants, existsSync, mkdirSync, statSync, chmodSync } from 'node:fs';
import { CliError, UsageError } from '../errors.ts';
import type { Settings } from '../settings.ts';

/** The base dir must exist and be a directory (exit 2 otherwise, naming the setting). */
export function requireBaseDir(dir: string): void {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch {
    throw new UsageError(
      `PLANETARION_DIR '${dir}' does not exist`,
      'Create it, or set PLANETARION_DIR (or --dir) to the project folder on the NAS.',
    );
  }
  if (!isDirectory)
    throw new UsageError(
      `PLANETARION_DIR '${dir}' is not a directory`,
      'Point PLANETARION_DIR (or --dir) at the project folder.',
    );
}

/**
 * The base dir must exist (exit 2 otherwise); the backup and log dirs must exist or be creatable,
 * and writable; none may be writable by group or others. Returns a warning per folder of ours
 * whose mode it made private (a dry run only says it would).
 */
export function checkBackupDirectories(settings: Settings, create: boolean): string[] {
  requireBaseDir(settings.dir);
  const notes = [checkPrivateFolder('PLANETARION_DIR', settings.dir, create)];
  for (const [name, dir] of [
    ['PLANETARION_BACKUP_DIR', settings.backupDir],
    ['PLANETARION_LOG_DIR', settings.logDir],
  ] as const) {
    if (!existsSync(dir)) {
      if (create) mkdirSync(dir, { recursive: true, mode: 0o700 });
      continue;
    }
    notes.push(checkPrivateFolder(name, dir, create));
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch {
      throw new CliError(`Permission denied: ${name} '${dir}' is not writable by this user`, {
        advice: `Fix its owner or mode, e.g. chmod 700 ${dir} (as the user cron runs the backup as).`,
      });
    }
  }
  return notes.filter((note): note is string => note !== undefined);
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');
const otherWriters = (mode: number) => [mode & 0o020 ? 'its group' : '', mode & 0o002 ? 'others' : ''].filter(Boolean);

/**
 * A folder the tools write in must be a directory that only its owner can write to: anyone else
 * who can could plant a file or a symlink at a name a run is about to use, or delete backups.
 * A folder of ours that is not (the old scripts made them under a umask of 002, or a share's
 * default) loses its group and other write bits, with a warning returned, so an upgrade does not
 * stop the backups; one owned by another user is refused, as is one whose mode does not change
 * (a filesystem without Unix modes). Without `fix` (a dry run) it only says what it would do.
 */
export function checkPrivateFolder(name: string, dir: string, fix = true): string | undefined {
  const stat = statSync(dir);
  if (!stat.isDirectory()) throw new UsageError(`${name} '${dir}' is not a directory`, `Set ${name} to a folder.`);
  const writers = otherWriters(stat.mode);
  if (!writers.length) return undefined;
  const refusal = (why: string) =>
    new UsageError(
      `${name} '${dir}' is writable by ${writers.join(' and ')} (mode ${octal(stat.mode)})${why}: another user could plant files or links in it`,
      `Run: chmod go-w ${dir} (as its owner). On a filesystem without Unix modes (exFAT, FAT), mount it with umask=077.`,
    );
  if (stat.uid !== process.getuid?.()) throw refusal(` and owned by uid ${stat.uid}, not this user`);
  const privateMode = stat.mode & 0o7755;
  if (!fix)
    return `${name} '${dir}' is writable by ${writers.join(' and ')} (mode ${octal(stat.mode)}): a real run makes it ${octal(privateMode)} (chmod go-w)`;
  try {
    chmodSync(dir, privateMode);
  } catch {
    // The mode check below says what is wrong.
  }
  if (otherWriters(statSync(dir).mode).length) throw refusal(' and its mode cannot be changed');
  return `${name} '${dir}' was writable by ${writers.join(' and ')} (mode ${octal(stat.mode)}); made it ${octal(privateMode)} (chmod go-w), as another user could have planted files or links in it`;
}
