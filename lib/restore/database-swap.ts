// Swapping a proven database in by renaming, beside the live one. The live database is fenced
// (no new sessions, the old ones ended), then both renames commit in one transaction. Before
// that commit a failure or a signal undoes the fence; after it the swap is done, and what
// follows (letting sessions into the previous database, dropping older ones) can only warn.
import { stampAfter } from '../store/backup-files.ts';
import { CliError, errorText } from '../errors.ts';
import { quoteIdent } from '../dump/fingerprint.ts';
import { checkpoint } from './interruption.ts';
import type { Logger } from '../log.ts';
import type { Sql } from '../host/psql-session.ts';

/** Runs SQL on the maintenance database; resolves to psql's unaligned, tuples-only output. */
export type DatabaseKind = 'previous' | 'restore' | 'drill' | 'stream';

const maxName = 63;
const stampLength = 15;
const literal = (text: string) => `'${text.replace(/'/g, "''")}'`;

/** The longest start of `text` that fits `bytes` in UTF-8, never half a character. */
function utf8Prefix(text: string, bytes: number): string {
  let used = 0;
  let end = 0;
  for (const char of text) {
    used += Buffer.byteLength(char);
    if (used > bytes) break;
    end += char.length;
  }
  return text.slice(0, end);
}

// Cut by bytes: PostgreSQL truncates a longer name to 63 bytes itself, and two cut names could then meet.
const prefixOf = (live: string, kind: DatabaseKind) => utf8Prefix(live, maxName - kind.length - stampLength - 2);

/** `<live>_<kind>_<YYYYMMDD_HHMMSS>`, the live name cut so the whole fits PostgreSQL's 63 bytes. */
export const suffixName = (live: string, kind: DatabaseKind, stamp: string) =>
  `${prefixOf(live, kind)}_${kind}_${stamp}`;

/** The names suffixName gives a live database's databases of these kinds, at any time. */
export function kindPattern(live: string, kinds: DatabaseKind[]): RegExp {
  const alternatives = kinds.map((kind) => `${prefixOf(live, kind).replace(/[^\w]/g, '\\$&')}_${kind}`);
  return new RegExp(`^(?:${alternatives.join('|')})_\\d{8}_\\d{6}$`);
}

/** Databases kept for rollback are named <live>_previous_<YYYYMMDD_HHMMSS>. */
export const previousPattern = (live: string) => kindPattern(live, ['previous']);

const databaseNames = async (sql: Sql) => new Set((await sql('SELECT datname FROM pg_database;')).split('\n'));

/**
 * Swaps `restored` in as `target.database`: the live one becomes <live>_previous_<stamp>, older
 * previous ones are dropped. Throws only before the rename commits, with the live database
 * accepting connections again; `abort` (a signal) is honoured up to that commit.
 */
export async function swapDatabases(
  sql: Sql,
  target: { database: string },
  restored: string,
  stamp: string,
  log: Logger,
  abort?: AbortSignal,
): Promise<string | undefined> {
  const live = target.database;
  const existing = await databaseNames(sql);
  // Two swaps in one second (a restore and its --rollback) would want the same name: the later
  // one takes the next second, so names still sort by age and --rollback finds the newest.
  let previous = suffixName(live, 'previous', stamp);
  for (let later = 1; existing.has(previous); later++)
    previous = suffixName(live, 'previous', stampAfter(stamp, later));
  checkpoint(abort);
  if (!existing.has(live)) {
    await sql(
      `BEGIN; ALTER DATABASE ${quoteIdent(restored)} WITH ALLOW_CONNECTIONS true; ALTER DATABASE ${quoteIdent(restored)} RENAME TO ${quoteIdent(live)}; COMMIT;`,
    );
    log.info(`Restored database is now '${live}' (there was no live database of that name)`);
    return undefined;
  }
  await fence(sql, live, log, abort);
  await renameBoth(sql, { live, previous, restored }, log);
  log.info(`Swapped: '${live}' is the restored database; the previous one is kept as '${previous}' for --rollback`);
  await afterSwap(sql, live, previous, log, abort);
  return previous;
}

/** Refuses new sessions on the live database and ends the old ones; undone on any failure or signal. */
async function fence(sql: Sql, live: string, log: Logger, abort: AbortSignal | undefined): Promise<void> {
  log.info(`Fencing '${live}' for the rename: new sessions are refused and the open ones ended`);
  // New sessions are refused while the old ones are ended, so none slips in before the rename.
  await sql(`ALTER DATABASE ${quoteIdent(live)} WITH ALLOW_CONNECTIONS false;`);
  try {
    for (let i = 0; ; i++) {
      checkpoint(abort);
      const left = await sql(
        `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${literal(live)} AND pid <> pg_backend_pid();`,
      );
      if (left === '0') break;
      if (i >= 50) throw new CliError(`sessions on '${live}' did not end`);
      await new Promise((r) => setTimeout(r, 200));
    }
    checkpoint(abort);
  } catch (error) {
    await unfence(sql, live, log);
    throw error;
  }
}

/** Lets sessions into a database again; tries a few times, as this is what keeps the game up. */
export async function unfence(sql: Sql, database: string, log: Logger): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await sql(`ALTER DATABASE ${quoteIdent(database)} WITH ALLOW_CONNECTIONS true;`);
      log.info(`'${database}' accepts connections again`);
      return;
    } catch (error) {
      if (attempt >= 3) {
        log.error(
          `'${database}' still refuses connections (${errorText(error)}): run ALTER DATABASE ${quoteIdent(database)} WITH ALLOW_CONNECTIONS true; as a superuser`,
        );
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Both renames in one transaction: the name never points at nothing, and the one swapped in takes sessions. */
async function renameBoth(
  sql: Sql,
  names: { live: string; previous: string; restored: string },
  log: Logger,
): Promise<void> {
  const { live, previous, restored } = names;
  try {
    await sql(
      `BEGIN; ALTER DATABASE ${quoteIdent(restored)} WITH ALLOW_CONNECTIONS true; ALTER DATABASE ${quoteIdent(live)} RENAME TO ${quoteIdent(previous)};` +
        ` ALTER DATABASE ${quoteIdent(restored)} RENAME TO ${quoteIdent(live)}; COMMIT;`,
    );
  } catch (error) {
    // The reply can be lost after the commit went through (the session killed): the catalog tells.
    const after = await databaseNames(sql).catch(() => new Set<string>());
    if (after.has(previous) && !after.has(restored)) {
      log.warn(`The rename reported a failure (${errorText(error)}) but committed: the swap is done`);
      return;
    }
    await unfence(sql, live, log);
    throw error;
  }
}

/** The steps after the commit: each failure is a warning, the swap stands. */
async function afterSwap(
  sql: Sql,
  live: string,
  previous: string,
  log: Logger,
  abort: AbortSignal | undefined,
): Promise<void> {
  await sql(`ALTER DATABASE ${quoteIdent(previous)} WITH ALLOW_CONNECTIONS true;`).catch((e: unknown) =>
    log.warn(
      `The swap is done, but '${previous}' still refuses connections (${errorText(e)}); --rollback lets them in when it brings it back`,
    ),
  );
  if (abort?.aborted) {
    log.warn('Interrupted after the swap: older previous databases are left for the next restore to drop');
    return;
  }
  const pattern = previousPattern(live);
  const listed = await sql('SELECT datname FROM pg_database ORDER BY datname;').catch((e: unknown) => {
    log.warn(`The swap is done, but the older previous databases could not be listed: ${errorText(e)}`);
    return '';
  });
  for (const name of listed.split('\n').filter((n) => pattern.test(n) && n !== previous)) {
    await sql(`DROP DATABASE ${quoteIdent(name)} WITH (FORCE);`).then(
      () => log.info(`Dropped '${name}': only the newest previous database is kept`),
      (e: unknown) =>
        log.warn(`The swap is done, but the older previous database '${name}' could not be dropped: ${errorText(e)}`),
    );
  }
}

/**
 * Drops the scratch databases (`_restore_`, `_drill_`, `_stream_`) a killed run left beside the
 * live one. Call it only under the shared lock: no other run's scratch database exists then.
 */
export async function dropLeftoverScratch(sql: Sql, live: string, log: Logger): Promise<string[]> {
  const pattern = kindPattern(live, ['restore', 'drill', 'stream']);
  const leftovers = [...(await databaseNames(sql))].filter((n) => pattern.test(n)).sort();
  for (const name of leftovers) {
    await sql(`DROP DATABASE ${quoteIdent(name)} WITH (FORCE);`);
    log.warn(`Dropped '${name}', a scratch database left behind by a run that was killed`);
  }
  return leftovers;
}
