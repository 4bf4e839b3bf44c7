// The restore engine: a backup is restored into a new database beside the live one, proven by
// its fingerprint, and only then swapped in by renaming. A failed attempt drops what it made,
// writes a diagnostics file and leaves the live database as it was. deploy-to-qnap uses the same.
import { createReadStream } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { basename, join } from 'node:path';
import { AgeError, decryptStream } from '../age.ts';
import { writeFileAtomic } from '../host/atomic-file.ts';
import { readManifest } from '../store/manifest.ts';
import { backupStamp } from '../store/backup-files.ts';
import { checkBackupFile, type CheckedBackup, type DumpFileFormat } from '../store/check-file.ts';
import {
  alterDatabaseSql,
  createDatabaseSql,
  fixedPropertyDifferences,
  readDatabaseProperties,
  type DatabaseProperties,
} from '../dump/database-properties.ts';
import { previousPattern, suffixName, swapDatabases } from './database-swap.ts';
import { CliError, errorText } from '../errors.ts';
import {
  compareFingerprints,
  currentAlgorithm,
  quoteIdent,
  takeFingerprint,
  type Fingerprint,
  type FingerprintDifference,
} from '../dump/fingerprint.ts';
import { checkpoint, InterruptedError } from './interruption.ts';
import type { Logger } from '../log.ts';
import { PsqlSession, sessionSql, type Sql } from '../host/psql-session.ts';
import { checkRestoreSpace, refusalReason } from './preflight.ts';
import { redactRowData } from '../dump/row-data-redaction.ts';
import type { Shell } from '../host/shell.ts';

export { previousPattern, swapDatabases } from './database-swap.ts';

export interface RestoreTarget {
  docker: string;
  container: string;
  user: string;
  /** The live database's name: what the restored database will be called after the swap. */
  database: string;
}

export interface RestoreOptions {
  target: RestoreTarget;
  $: Shell;
  log: Logger;
  /** Where restore_debug_<ts>.json files go. */
  logDir: string;
  /** Restore a file without manifest/checksum or fingerprint (the data cannot be proven then). */
  noVerify?: boolean;
  /** Restore a backup whose manifest names another database than the target. */
  otherDatabase?: boolean;
  /** Backups are encrypted: psql's quotes of row data are cut from the messages. */
  redactRowData?: boolean;
  /** Fires on SIGINT/SIGTERM/SIGHUP: the attempt stops at its next safe point, undoing what it began. */
  abort?: AbortSignal;
  /** Restore and prove, then drop instead of swapping (the restore drill). */
  drillOnly?: boolean;
  /** age secret keys (AGE-SECRET-KEY-1...) for encrypted backups; held in memory only. */
  identities?: string[];
  now?: () => Date;
}

export interface AttemptResult {
  file: string;
  ok: boolean;
  /** Why it lost, when it did. */
  reason: string | undefined;
  /** The diagnostics file written for a failed attempt. */
  diagnostics: string | undefined;
  fingerprint: string | null;
  durationMs: number;
  /** Whether a database was touched at all (false when rejected by the file checks). */
  touchedDatabase: boolean;
  /** The attempt got to the swap: a failure there is the server's, not the backup's, so no other backup is tried. */
  reachedSwap: boolean;
}

export interface RestoreResult extends AttemptResult {
  /** The previous live database, kept for --rollback (undefined if there was none or for a drill). */
  previousDatabase: string | undefined;
}

/** Runs SQL as the target user on the maintenance database (never on the ones being swapped). */
export async function adminSql($: Shell, target: RestoreTarget, sql: string): Promise<string> {
  const out = await $({
    input: sql,
    nothrow: true,
    timeout: '120s',
  })`${target.docker} exec -i ${target.container} psql -X -q -A -t -v ON_ERROR_STOP=1 -U ${target.user} -d postgres`;
  if (out.exitCode !== 0)
    throw new CliError(`SQL in '${target.container}' failed: ${out.stderr.trim() || `exit ${out.exitCode}`}`);
  return out.stdout.trim();
}

/** A `docker exec psql` per statement: for the odd statement outside a restore. */
export const oneShotSql =
  ($: Shell, target: RestoreTarget): Sql =>
  (sql) =>
    adminSql($, target, sql);

/**
 * One psql session on the maintenance database for a run of statements: a restore creates,
 * checks, renames and drops a dozen times, and each `docker exec` costs ~0.1 s. After an error
 * (ON_ERROR_STOP ends the session) the next statement opens a new one.
 */
export class AdminSession {
  private session: PsqlSession | undefined;
  private fresh = true;

  constructor(private readonly target: RestoreTarget) {
    // Connects at once: by the time the first statement is needed, psql is ready.
    this.session = this.open();
  }

  private open(): PsqlSession {
    this.fresh = true;
    return PsqlSession.open({
      docker: this.target.docker,
      container: this.target.container,
      user: this.target.user,
      database: 'postgres',
    });
  }

  readonly sql: Sql = async (sql) => {
    this.session ??= this.open();
    // A NOTICE (`does not exist, skipping`) would otherwise lead every later error message of the session.
    const statement = this.fresh ? `SET client_min_messages TO warning; ${sql}` : sql;
    this.fresh = false;
    try {
      return (await sessionSql(this.session)(statement)).trim();
    } catch (error) {
      this.session.kill();
      this.session = undefined;
      throw new CliError(
        `SQL in '${this.target.container}' failed: ${errorText(error).replace(/^psql in the container failed: /, '')}`,
      );
    }
  };

  async close(): Promise<void> {
    await this.session?.close();
    this.session = undefined;
  }
}

/**
 * The load command run in the container for each format. A plain dump loads in one transaction.
 * A gzip one is decompressed in the container (measured 1.6x faster than on the host), and its
 * transaction commits only when gunzip read the stream to its valid end: a truncated stream
 * would otherwise end psql's input like a finished one and commit what came before the cut. The
 * container's sh (dash) has no pipefail, so gunzip's status comes back on fd 3.
 */
function loadScript(format: DumpFileFormat): string {
  const psql = `psql -X -q -v ON_ERROR_STOP=1 -U "$1" -d "$2"`;
  if (format === 'custom') return 'pg_restore --exit-on-error --single-transaction -U "$1" -d "$2"';
  if (format === 'plain') return `${psql} --single-transaction >/dev/null`;
  return (
    `gz=$( { { printf 'BEGIN;\\n'; gunzip -c; st=$?; if [ "$st" = 0 ]; then printf '\\nCOMMIT;\\n'; fi; echo "$st" >&3; } | ${psql} >/dev/null; } 3>&1 ); ps=$?; ` +
    `if [ "$ps" != 0 ]; then exit "$ps"; fi; ` +
    `if [ "$gz" != 0 ]; then echo "the gzip stream is broken (gunzip exit $gz): nothing was committed" >&2; exit 4; fi`
  );
}

/**
 * A load of a dump into a database in the target container, fed chunk by chunk. restore feeds
 * it a file (an encrypted one decrypted here on the way, so the plaintext exists only in this
 * process's memory and the container's pipe); deploy feeds it the fresh dump while that is
 * written to its file.
 */
export class StreamLoad {
  private readonly child: ReturnType<typeof spawn>;
  private readonly closed: Promise<[number | null]>;
  private stderr = '';
  private exited = false;

  constructor(
    target: RestoreTarget,
    readonly database: string,
    private readonly format: DumpFileFormat,
  ) {
    // The names travel as positional parameters of sh -c: never spliced into the script.
    this.child = spawn(
      target.docker,
      ['exec', '-i', target.container, 'sh', '-c', loadScript(format), 'sh', target.user, database],
      { stdio: ['pipe', 'ignore', 'pipe'] },
    );
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (this.stderr.length < 64 * 1024) this.stderr += d;
    });
    this.child.stdin!.on('error', () => {}); // psql stopping early closes the pipe; its exit code tells why
    this.closed = once(this.child, 'close') as Promise<[number | null]>;
    void this.closed.then(() => (this.exited = true));
  }

  /** Takes the next chunk; resolves when it may take more. Never throws: once the load has stopped, chunks are dropped and finish() says why. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.exited || this.child.stdin!.destroyed) return;
    if (!this.child.stdin!.write(chunk)) await Promise.race([once(this.child.stdin!, 'drain'), this.closed]);
  }

  /**
   * The whole dump was written: waits for the load to commit; throws a CliError when it did not.
   * `redact`: the backup is encrypted, so the rows psql quotes in its errors are cut.
   */
  async finish(redact = false): Promise<void> {
    this.child.stdin!.end();
    const [code] = await this.closed;
    if (code === 0) return;
    const stderr = redact ? redactRowData(this.stderr) : this.stderr;
    throw new CliError(
      `the dump did not restore (${this.format === 'custom' ? 'pg_restore' : 'load'} exit ${code}): ${stderr.trim().split('\n').slice(0, 5).join(' | ')}`,
    );
  }

  /** Stops the load: nothing is committed (it runs in one transaction). */
  async abort(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.closed;
  }
}

/** Loads a backup file through a StreamLoad; a signal stops it. */
async function loadDump(
  backup: CheckedBackup,
  target: RestoreTarget,
  database: string,
  options: RestoreOptions,
): Promise<void> {
  const load = new StreamLoad(target, database, backup.format);
  const chunks = backup.encrypted
    ? decryptStream(createReadStream(backup.path), options.identities ?? [])
    : (createReadStream(backup.path, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>);
  const stop = () => void load.abort();
  options.abort?.addEventListener('abort', stop, { once: true });
  try {
    for await (const chunk of chunks) {
      checkpoint(options.abort);
      await load.write(chunk);
    }
    checkpoint(options.abort);
  } catch (error) {
    // The load stops here. Whatever psql makes of the partial input lands only in the scratch
    // database, which the caller drops: the live database is never the target of a load.
    await load.abort();
    if (!(error instanceof AgeError)) throw error;
    // The file changed since it was checked (it decrypted to its end then).
    throw new CliError(`${basename(backup.path)} stopped decrypting during the restore: ${error.message}`);
  } finally {
    options.abort?.removeEventListener('abort', stop);
  }
  await load.finish(options.redactRowData || backup.encrypted);
  checkpoint(options.abort);
}

/**
 * Fingerprints a database in the target container the way the manifest's was taken: the same
 * algorithm, without the tables it excluded. A signal ends the session (and so the query).
 */
async function fingerprintDatabase(
  session: PsqlSession,
  expected: Fingerprint | null,
  abort: AbortSignal | undefined,
): Promise<Fingerprint> {
  const exact = (expected?.excluded ?? []).map((name) => new RegExp(`^${name.replace(/[^\w]/g, '\\$&')}$`));
  const stop = () => session.kill();
  abort?.addEventListener('abort', stop, { once: true });
  try {
    return await takeFingerprint(session, exact, expected ? (expected.algorithm ?? 'text') : currentAlgorithm);
  } finally {
    abort?.removeEventListener('abort', stop);
    checkpoint(abort);
  }
}

/** Server version of the target, for diagnostics. */
async function serverVersion(sql: Sql): Promise<string> {
  return sql('SHOW server_version;').catch((e: unknown) => `unknown (${errorText(e)})`);
}

interface Diagnostics {
  time: string;
  file: string;
  target: { container: string; database: string; user: string; scratchDatabase: string | undefined };
  error: string;
  expectedFingerprint: string | null;
  actualFingerprint: string | null;
  differences: FingerprintDifference[];
  postgres: { backupServer: string | undefined; backupPgDump: string | undefined; targetServer: string };
  settings: { noVerify: boolean; drillOnly: boolean };
  toolVersion?: string;
}

function writeDiagnostics(logDir: string, stamp: string, attempt: number, diagnostics: Diagnostics): string {
  const path = join(logDir, `restore_debug_${stamp}${attempt > 1 ? `_${attempt}` : ''}.json`);
  writeFileAtomic(path, `${JSON.stringify(diagnostics, null, 2)}\n`);
  return path;
}

/** The name of a scratch database beside the live one: <live>_restore_<ts> (or _drill_, _stream_). */
export const scratchName = (target: RestoreTarget, kind: 'restore' | 'drill' | 'stream', stamp: string) =>
  suffixName(target.database, kind, stamp);

/** Creates an empty scratch database (replacing a leftover of the same name), with the live one's encoding, locale and owner when known. */
export async function createScratch(sql: Sql, scratch: string, properties?: DatabaseProperties): Promise<void> {
  await sql(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE); ${createDatabaseSql(scratch, properties)}`);
}

/** Drops a scratch database; a failure is logged, not thrown (it is only a leftover then). */
export async function dropScratch(sql: Sql, scratch: string, log: Logger): Promise<void> {
  await sql(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE);`).catch((e: unknown) =>
    log.warn(`could not drop '${scratch}': ${errorText(e)}`),
  );
}

/**
 * The database-level properties the restored database must have: the manifest's (recorded at
 * backup time), else the live database's, else none (a server default database).
 */
async function wantedProperties(
  sql: Sql,
  backup: CheckedBackup,
  live: string,
  log: Logger,
): Promise<DatabaseProperties | undefined> {
  if (backup.manifest?.databaseProperties) return backup.manifest.databaseProperties;
  const properties = await readDatabaseProperties(sql, live);
  log.info(
    properties
      ? `The manifest records no database-level properties: '${live}''s are used`
      : `No database-level properties known: the server's defaults are used`,
  );
  return properties;
}

/** Gives the loaded scratch database the rest of the properties; a streamed one is first checked for the fixed ones. */
async function applyProperties(
  sql: Sql,
  scratch: string,
  properties: DatabaseProperties,
  streamed: boolean,
): Promise<void> {
  if (streamed) {
    const actual = await readDatabaseProperties(sql, scratch);
    const differences = actual ? fixedPropertyDifferences(properties, actual) : ['the database is gone'];
    if (differences.length)
      throw new CliError(
        `'${scratch}' was created with other settings than the backup's database (${differences.join(', ')})`,
      );
    await sql(`ALTER DATABASE ${quoteIdent(scratch)} OWNER TO ${quoteIdent(properties.owner)};`);
  }
  await sql(alterDatabaseSql(scratch, properties));
}

/** What one attempt learned as it went: its result and diagnostics report it. */
interface Attempt {
  file: string;
  name: string;
  number: number;
  stamp: string;
  started: number;
  scratch: string | undefined;
  backup: CheckedBackup | undefined;
  expected: Fingerprint | null;
  actual: Fingerprint | null;
  differences: FingerprintDifference[];
  reachedSwap: boolean;
}

const resultOf = (
  a: Attempt,
  ok: boolean,
  reason: string | undefined,
  diagnostics: string | undefined,
  previousDatabase?: string,
): RestoreResult => ({
  file: a.file,
  ok,
  reason,
  diagnostics,
  fingerprint: a.actual?.sha256 ?? null,
  durationMs: Date.now() - a.started,
  touchedDatabase: a.scratch !== undefined,
  reachedSwap: a.reachedSwap,
  previousDatabase,
});

/**
 * One restore attempt: check the file (no database touched if it fails), restore into a new
 * database, prove the fingerprint, then swap (or, for a drill, drop). Never throws for a bad
 * backup: the result says why it lost, and a diagnostics file holds the details.
 *
 * `streaming`: the file's bytes already went into a scratch database while the file was being
 * written (deploy tees its fresh dump into the new slot); the attempt then checks the file,
 * waits for that load instead of starting one, and proves it the same way.
 */
export async function restoreBackup(
  file: string,
  options: RestoreOptions,
  attempt = 1,
  streaming?: StreamLoad,
): Promise<RestoreResult> {
  const { target, log } = options;
  const now = options.now ?? (() => new Date());
  const a: Attempt = {
    file,
    name: basename(file),
    number: attempt,
    stamp: backupStamp(now()),
    started: Date.now(),
    scratch: undefined,
    backup: undefined,
    expected: null,
    actual: null,
    differences: [],
    reachedSwap: false,
  };
  log.info(
    `Restore attempt ${attempt}: ${a.name} into '${target.database}' in container '${target.container}'${options.drillOnly ? ' (drill: scratch database only)' : ''}`,
  );
  const checked = await checkBackupFile(file, {
    requireManifest: !options.noVerify,
    identities: options.identities,
  }).catch((e: unknown) => ({ ok: false as const, reason: errorText(e) }));
  const refusal = checked.ok ? refusalReason(checked.backup, target.database, options) : checked.reason;
  if (!checked.ok || refusal) return await rejectAttempt(a, refusal!, options, streaming);
  a.backup = checked.backup;
  a.expected = a.backup.manifest?.fingerprint ?? null;
  log.info(
    `Checked ${a.name}: sha256 ${a.backup.sha256} matches${a.backup.manifest ? ' its manifest' : ''}${a.backup.encrypted ? ', decrypts and authenticates to its end' : ''}, dump complete`,
  );
  if (!a.expected)
    log.warn(`${a.name} has no fingerprint in a manifest: the restored data cannot be proven identical (--no-verify)`);

  const admin = new AdminSession(target);
  try {
    const previous = await restoreProveAndSwap(a, options, admin, streaming);
    return resultOf(a, true, undefined, undefined, previous);
  } catch (error) {
    return await failAttempt(a, error, options, admin, streaming);
  } finally {
    await admin.close();
  }
}

/** The file was refused before any database was touched (or, streamed, its scratch database is dropped). */
async function rejectAttempt(
  a: Attempt,
  reason: string,
  options: RestoreOptions,
  streaming: StreamLoad | undefined,
): Promise<RestoreResult> {
  const { target, $, log } = options;
  if (streaming) {
    a.scratch = streaming.database;
    await streaming.abort();
    await dropScratch(oneShotSql($, target), a.scratch, log);
  }
  log.error(`Rejected ${a.name}${streaming ? '' : ' before touching any database'}: ${reason}`);
  const manifest = readManifest(a.file);
  const diagnostics = writeDiagnostics(options.logDir, a.stamp, a.number, {
    time: (options.now ?? (() => new Date()))().toISOString(),
    file: a.file,
    target: { container: target.container, database: target.database, user: target.user, scratchDatabase: a.scratch },
    error: reason,
    expectedFingerprint: null,
    actualFingerprint: null,
    differences: [],
    postgres: {
      backupServer: manifest?.postgres?.server,
      backupPgDump: manifest?.postgres?.pgDump,
      // Not asked when no database was touched: a `docker exec` costs more than the read that rejected the file.
      targetServer: streaming
        ? await serverVersion(oneShotSql($, target))
        : 'not asked: the file was rejected before any database was touched',
    },
    settings: { noVerify: options.noVerify === true, drillOnly: options.drillOnly === true },
  });
  return resultOf(a, false, reason, diagnostics);
}

/** Restores into a scratch database, proves it, then drops it (a drill) or swaps it in; throws why it lost. */
async function restoreProveAndSwap(
  a: Attempt,
  options: RestoreOptions,
  admin: AdminSession,
  streaming: StreamLoad | undefined,
): Promise<string | undefined> {
  const { target, $, log } = options;
  const backup = a.backup!;
  // The proof's session connects to the scratch database while the dump loads, so the
  // fingerprint starts the moment the load commits; it is closed before the swap renames it.
  let proof: PsqlSession | undefined;
  const connectProof = (database: string) =>
    PsqlSession.open({ docker: target.docker, container: target.container, user: target.user, database });
  let scratch: string;
  try {
    const properties = await wantedProperties(admin.sql, backup, target.database, log);
    if (streaming) {
      scratch = a.scratch = streaming.database;
      proof = connectProof(scratch);
      await streaming.finish(options.redactRowData || backup.encrypted);
    } else {
      await checkRestoreSpace(admin.sql, $, target, backup, log);
      checkpoint(options.abort);
      scratch = a.scratch = scratchName(target, options.drillOnly ? 'drill' : 'restore', a.stamp);
      await createScratch(admin.sql, scratch, properties);
      proof = connectProof(scratch);
      await loadDump(backup, target, scratch, options);
    }
    log.info(`Restored ${a.name} into '${scratch}'`);
    // After the load: a setting such as default_transaction_read_only must not apply to it.
    if (properties) await applyProperties(admin.sql, scratch, properties, streaming !== undefined);
    a.actual = await fingerprintDatabase(proof, a.expected, options.abort);
    await proof.close();
    proof = undefined;
  } finally {
    proof?.kill();
  }
  if (a.expected) {
    a.differences = compareFingerprints(a.expected, a.actual);
    if (a.actual.sha256 !== a.expected.sha256) {
      throw new CliError(
        `the fingerprint of the restored data differs from the backup's (${a.differences.length} difference(s): ${a.differences
          .map((d) => d.name)
          .slice(0, 5)
          .join(', ')})`,
      );
    }
    log.info(`Fingerprint proven: ${a.actual.sha256}`);
  }
  if (options.drillOnly) {
    await admin.sql(`DROP DATABASE ${quoteIdent(scratch)} WITH (FORCE);`);
    return undefined;
  }
  checkpoint(options.abort);
  a.reachedSwap = true;
  return await swapDatabases(admin.sql, target, scratch, a.stamp, log, options.abort);
}

/** Drops what the attempt made and writes its diagnostics; the live database is as it was (swapDatabases undid its fence). */
async function failAttempt(
  a: Attempt,
  error: unknown,
  options: RestoreOptions,
  admin: AdminSession,
  streaming: StreamLoad | undefined,
): Promise<RestoreResult> {
  const { target, log } = options;
  const interrupted = error instanceof InterruptedError || options.abort?.aborted === true;
  const text = interrupted
    ? `interrupted by ${String(options.abort?.reason ?? (error as InterruptedError).signal)}`
    : errorText(error);
  const reason = options.redactRowData || a.backup?.encrypted ? redactRowData(text) : text;
  log.error(`Restore of ${a.name} failed: ${reason}`);
  if (a.scratch) {
    await streaming?.abort();
    await dropScratch(admin.sql, a.scratch, log);
  }
  const diagnostics = writeDiagnostics(options.logDir, a.stamp, a.number, {
    time: (options.now ?? (() => new Date()))().toISOString(),
    file: a.file,
    target: { container: target.container, database: target.database, user: target.user, scratchDatabase: a.scratch },
    error: reason,
    expectedFingerprint: a.expected?.sha256 ?? null,
    actualFingerprint: a.actual?.sha256 ?? null,
    differences: a.differences,
    postgres: {
      backupServer: a.backup?.manifest?.postgres.server,
      backupPgDump: a.backup?.manifest?.postgres.pgDump,
      targetServer: await serverVersion(admin.sql),
    },
    settings: { noVerify: options.noVerify === true, drillOnly: options.drillOnly === true },
  });
  log.error(`Diagnostics written to ${diagnostics}`);
  return resultOf(a, false, reason, diagnostics);
}

/**
 * The fallback chain: candidates newest first; the first that restores and proves its fingerprint
 * wins. It ends at an attempt that got to the swap (what failed there was the server, and the
 * next backup would meet it too) and at a signal.
 */
export async function restoreWithFallback(
  files: string[],
  options: RestoreOptions,
  earlier: RestoreResult[] = [],
): Promise<{ winner: RestoreResult | undefined; attempts: RestoreResult[] }> {
  const attempts: RestoreResult[] = [...earlier];
  for (const [i, file] of files.entries()) {
    const attemptResult = await restoreBackup(file, options, earlier.length + i + 1);
    attempts.push(attemptResult);
    if (attemptResult.ok) return { winner: attemptResult, attempts };
    if (attemptResult.reachedSwap || options.abort?.aborted) break;
    if (i + 1 < files.length) options.log.warn(`Falling back to the next older backup: ${basename(files[i + 1]!)}`);
  }
  return { winner: undefined, attempts };
}

/** Makes the previous database live again (accepting connections); the current live one becomes the previous. */
export async function rollbackDatabase(
  target: RestoreTarget,
  log: Logger,
  now = new Date(),
  abort?: AbortSignal,
): Promise<{ restored: string; previous: string }> {
  const pattern = previousPattern(target.database);
  const admin = new AdminSession(target);
  try {
    const candidates = (await admin.sql('SELECT datname FROM pg_database ORDER BY datname DESC;'))
      .split('\n')
      .filter((n) => pattern.test(n));
    const newest = candidates[0];
    if (!newest)
      throw new CliError(`there is no previous database of '${target.database}' to roll back to`, {
        advice: 'A previous database is kept by each restore; none exists in this container.',
      });
    const previous = await swapDatabases(admin.sql, target, newest, backupStamp(now), log, abort);
    return { restored: newest, previous: previous ?? '' };
  } finally {
    await admin.close();
  }
}
