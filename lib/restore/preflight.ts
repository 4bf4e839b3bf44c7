// What a restore checks before it creates anything: that the backup may go into this database
// (proven by a fingerprint, made of this database) and that the database volume has room for
// a second copy beside the live one.
import { basename } from 'node:path';
import type { CheckedBackup } from '../store/check-file.ts';
import { CliError, errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Shell } from '../host/shell.ts';
import { formatBytes } from '../format.ts';
import type { Sql } from '../host/psql-session.ts';

/** Why the backup must not be restored into `database` with these options, or undefined. */
export function refusalReason(
  backup: CheckedBackup,
  database: string,
  options: { noVerify?: boolean; otherDatabase?: boolean },
): string | undefined {
  const name = basename(backup.path);
  const manifest = backup.manifest;
  if (manifest && manifest.database !== database && !options.otherDatabase) {
    return `${name} is a backup of database '${manifest.database}', not of '${database}' (pass --other-database to restore it into '${database}' anyway)`;
  }
  if (!manifest?.fingerprint && !options.noVerify) {
    return `${name} has no fingerprint (it was made with PLANETARION_FINGERPRINT=off), so the restored data cannot be proven identical (pass --no-verify to restore it unproven)`;
  }
  return undefined;
}

/** Share of the database's size kept free on top of it: the load writes WAL and indexes grow unevenly. */
const margin = 0.1;

/**
 * Refuses a restore the database volume has no room for: the scratch database is a second copy
 * of about the live database's size (or, without one, the backup's SQL size). Measured inside
 * the container, where the data directory is.
 */
export async function checkRestoreSpace(
  sql: Sql,
  $: Shell,
  target: { docker: string; container: string; database: string },
  backup: CheckedBackup,
  log: Logger,
): Promise<void> {
  let dataDir: string;
  let liveSize: number;
  try {
    const [dir, size] = (
      await sql(
        `SELECT current_setting('data_directory'), coalesce((SELECT pg_database_size(datname) FROM pg_database WHERE datname = '${target.database.replace(/'/g, "''")}'), -1);`,
      )
    ).split('|');
    dataDir = dir!;
    liveSize = Number(size);
  } catch (error) {
    log.warn(`Could not learn the database volume's free space, restoring without that check: ${errorText(error)}`);
    return;
  }
  const size = liveSize >= 0 ? liveSize : (backup.manifest?.sqlBytes ?? backup.size);
  const needed = Math.ceil(size * (1 + margin));
  const df = await $({ nothrow: true, timeout: '30s' })`${target.docker} exec ${target.container} df -Pk ${dataDir}`;
  const available = Number(/\n\S+\s+\d+\s+\d+\s+(\d+)/.exec(df.stdout)?.[1]) * 1024;
  if (df.exitCode !== 0 || !Number.isFinite(available)) {
    log.warn(
      `Could not learn the database volume's free space (df ${dataDir}: ${df.stderr.trim() || `exit ${df.exitCode}`}), restoring without that check`,
    );
    return;
  }
  const what = liveSize >= 0 ? `the size of '${target.database}'` : `the backup's SQL size`;
  if (available < needed) {
    throw new CliError(
      `not enough free space on the database volume of '${target.container}' (${dataDir}): ${formatBytes(available)} free, the restore needs about ${formatBytes(needed)} (${what}, ${formatBytes(size)}, plus ${margin * 100}%)`,
      {
        advice:
          'Free space on that volume (a <database>_previous_<time> database kept for --rollback is a full copy), then run the restore again.',
      },
    );
  }
  log.info(
    `Free space on the database volume (${dataDir}): ${formatBytes(available)} (the restore needs about ${formatBytes(needed)})`,
  );
}
