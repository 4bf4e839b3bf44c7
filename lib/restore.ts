// The restore engine: a backup is restored into a new database beside the live one, proven by
// its fingerprint, and only then swapped in by renaming. A failed attempt drops what it made,
// writes a diagnostics file and leaves the live database as it was. deploy-to-qnap uses the same.
import { createReadStream } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { basename, join } from 'node:path';
import { AgeError, decryptStream } from './age.ts';
import { writeFileAtomic } from './atomic-file.ts';
import { readManifest } from './manifest.ts';
import { backupStamp, stampAfter } from './backup-files.ts';
import { checkBackupFile, type CheckedBackup, type DumpFileFormat } from './backup-check.ts';
import { CliError, errorText } from './errors.ts';
import { compareFingerprints, currentAlgorithm, quoteIdent, takeFingerprint, type Fingerprint, type FingerprintDifference } from './fingerprint.ts';
import type { Logger } from './log.ts';
import { PsqlSession } from './psql-session.ts';
import type { Shell } from './shell.ts';

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
  /** Restore a file without manifest/checksum (the fingerprint cannot be checked then). */
  noVerify?: boolean;
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
}

export interface RestoreResult extends AttemptResult {
  /** The previous live database, kept for --rollback (undefined if there was none or for a drill). */
  previousDatabase: string | undefined;
}

const maxName = 63;
const suffixName = (base: string, kind: string, stamp: string) => `${base.slice(0, maxName - kind.length - stamp.length - 2)}_${kind}_${stamp}`;
/** Databases kept for rollback are named <live>_previous_<YYYYMMDD_HHMMSS>. */
export const previousPattern = (live: string) => new RegExp(`^${live.slice(0, maxName - 'previous'.length - 17).replace(/[^\w]/g, '\\$&')}_previous_\\d{8}_\\d{6}$`);

/** Runs SQL as the target user on the maintenance database (never on the ones being swapped). */
export async function adminSql($: Shell, target: RestoreTarget, sql: string): Promise<string> {
  const out = await $({ input: sql, nothrow: true, timeout: '120s' })`${target.docker} exec -i ${target.container} psql -X -q -A -t -v ON_ERROR_STOP=1 -U ${target.user} -d postgres`;
  if (out.exitCode !== 0) throw new CliError(`SQL in '${target.container}' failed: ${out.stderr.trim() || `exit ${out.exitCode}`}`);
  return out.stdout.trim();
}

/** Runs SQL on the maintenance database; resolves to psql's unaligned, tuples-only output. */
export type Sql = (sql: string) => Promise<string>;

/** A `docker exec psql` per statement: for the odd statement outside a restore. */
export const oneShotSql = ($: Shell, target: RestoreTarget): Sql => (sql) => adminSql($, target, sql);

/**
 * One psql session on the maintenance database for a run of statements: a restore creates,
 * checks, renames and drops a dozen times, and each `docker exec` costs ~0.1 s. After an error
 * (ON_ERROR_STOP ends the session) the next statement opens a new one.
 */
export class AdminSession {
  private session: PsqlSession | undefined;

  constructor(private readonly target: RestoreTarget) {
    // Connects at once: by the time the first statement is needed, psql is ready.
    this.session = this.open();
  }

  private open(): PsqlSession {
    return PsqlSession.open({ docker: this.target.docker, container: this.target.container, user: this.target.user, database: 'postgres' });
  }

  readonly sql: Sql = async (sql) => {
    this.session ??= this.open();
    try {
      return (await this.session.query(sql)).map((row) => row.join('|')).join('\n').trim();
    } catch (error) {
      this.session.kill();
      this.session = undefined;
      throw new CliError(`SQL in '${this.target.container}' failed: ${errorText(error).replace(/^psql in the container failed: /, '')}`);
    }
  };

  async close(): Promise<void> {
    await this.session?.close();
    this.session = undefined;
  }
}

const literal = (text: string) => `'${text.replace(/'/g, "''")}'`;

/**
 * A load of a dump into a database in the target container, fed chunk by chunk: decompressed
 * inside the container (measured 1.6x faster than on the host). restore feeds it a file (an
 * encrypted one decrypted here on the way, so the plaintext exists only in this process's memory
 * and the container's pipe); deploy feeds it the fresh dump while that is written to its file.
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
    const psql = `psql -X -q -v ON_ERROR_STOP=1 --single-transaction -U "$1" -d "$2" >/dev/null`;
    const script = format === 'custom' ? 'pg_restore --exit-on-error --single-transaction -U "$1" -d "$2"' : format === 'gzip' ? `gunzip -c | ${psql}` : psql;
    // The names travel as positional parameters of sh -c: never spliced into the script.
    this.child = spawn(target.docker, ['exec', '-i', target.container, 'sh', '-c', script, 'sh', target.user, database], { stdio: ['pipe', 'ignore', 'pipe'] });
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

  /** The whole dump was written: waits for the load to commit; throws a CliError when it did not. */
  async finish(): Promise<void> {
    this.child.stdin!.end();
    const [code] = await this.closed;
    if (code !== 0) throw new CliError(`the dump did not restore (${this.format === 'custom' ? 'pg_restore' : 'psql'} exit ${code}): ${this.stderr.trim().split('\n').slice(0, 5).join(' | ')}`);
  }

  /** Stops the load: nothing is committed (it runs in one transaction). */
  async abort(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.closed;
  }
}

/** Loads a backup file through a StreamLoad. */
async function loadDump(backup: CheckedBackup, target: RestoreTarget, database: string, identities: string[] = []): Promise<void> {
  const load = new StreamLoad(target, database, backup.format);
  const chunks = backup.encrypted ? decryptStream(createReadStream(backup.path), identities) : (createReadStream(backup.path, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>);
  try {
    for await (const chunk of chunks) await load.write(chunk);
  } catch (error) {
    // The load stops here. Whatever psql makes of the partial input lands only in the scratch
    // database, which the caller drops: the live database is never the target of a load.
    await load.abort();
    if (!(error instanceof AgeError)) throw error;
    // The file changed since it was checked (it decrypted to its end then).
    throw new CliError(`${basename(backup.path)} stopped decrypting during the restore: ${error.message}`);
  }
  await load.finish();
}

/**
 * Fingerprints a database in the target container the way the manifest's was taken: the same
 * algorithm, without the tables it excluded.
 */
async function fingerprintDatabase(session: PsqlSession, expected: Fingerprint | null): Promise<Fingerprint> {
  const exact = (expected?.excluded ?? []).map((name) => new RegExp(`^${name.replace(/[^\w]/g, '\\$&')}$`));
  return await takeFingerprint(session, exact, expected ? (expected.algorithm ?? 'text') : currentAlgorithm);
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
  writeFileAtomic(path, JSON.stringify(diagnostics, null, 2) + '\n');
  return path;
}

/** The name of a scratch database beside the live one: <live>_restore_<ts> (or _drill_, _stream_). */
export const scratchName = (target: RestoreTarget, kind: 'restore' | 'drill' | 'stream', stamp: string) => suffixName(target.database, kind, stamp);

/** Creates an empty scratch database (replacing a leftover of the same name). */
export async function createScratch(sql: Sql, scratch: string): Promise<void> {
  await sql(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE); CREATE DATABASE ${quoteIdent(scratch)} TEMPLATE template0;`);
}

/** Drops a scratch database; a failure is logged, not thrown (it is only a leftover then). */
export async function dropScratch(sql: Sql, scratch: string, log: Logger): Promise<void> {
  await sql(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE);`).catch((e: unknown) => log.warn(`could not drop '${scratch}': ${errorText(e)}`));
}

/** Swaps the restored database in: the live one becomes <live>_previous_<ts>; older previous ones are dropped. */
export async function swapDatabases(sql: Sql, target: RestoreTarget, restored: string, stamp: string, log: Logger): Promise<string | undefined> {
  const live = target.database;
  const existing = new Set((await sql('SELECT datname FROM pg_database;')).split('\n'));
  // Two swaps in one second (a restore and its --rollback) would want the same name: the later
  // one takes the next second, so names still sort by age and --rollback finds the newest.
  let previous = suffixName(live, 'previous', stamp);
  for (let later = 1; existing.has(previous); later++) previous = suffixName(live, 'previous', stampAfter(stamp, later));
  if (!existing.has(live)) {
    await sql(`ALTER DATABASE ${quoteIdent(restored)} RENAME TO ${quoteIdent(live)};`);
    log.info(`Restored database is now '${live}' (there was no live database of that name)`);
    return undefined;
  }
  // New sessions are refused while the old ones are ended, so none slips in before the rename.
  await sql(`ALTER DATABASE ${quoteIdent(live)} WITH ALLOW_CONNECTIONS false;`);
  try {
    for (let i = 0; ; i++) {
      const left = await sql(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${literal(live)} AND pid <> pg_backend_pid();`);
      if (left === '0') break;
      if (i >= 50) throw new CliError(`sessions on '${live}' did not end; the live database was left as it was`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // Both renames in one transaction: the name never points at nothing.
    await sql(`BEGIN; ALTER DATABASE ${quoteIdent(live)} RENAME TO ${quoteIdent(previous)}; ALTER DATABASE ${quoteIdent(restored)} RENAME TO ${quoteIdent(live)}; COMMIT;`);
  } catch (error) {
    await sql(`ALTER DATABASE ${quoteIdent(live)} WITH ALLOW_CONNECTIONS true;`).catch(() => {});
    throw error;
  }
  await sql(`ALTER DATABASE ${quoteIdent(previous)} WITH ALLOW_CONNECTIONS true;`);
  log.info(`Swapped: '${live}' is the restored database; the previous one is kept as '${previous}' for --rollback`);
  const pattern = previousPattern(live);
  const olderPrevious = (await sql(`SELECT datname FROM pg_database ORDER BY datname;`)).split('\n').filter((n) => pattern.test(n) && n !== previous);
  for (const name of olderPrevious) {
    await sql(`DROP DATABASE ${quoteIdent(name)} WITH (FORCE);`);
    log.info(`Dropped '${name}': only the newest previous database is kept`);
  }
  return previous;
}

/**
 * One restore attempt: check the file (no database touched if it fails), restore into a new
 * database, prove the fingerprint, then swap (or, for a drill, drop). Never throws for a bad
 * backup: the result says why it lost, and a diagnostics file holds the details.
 *
 * `streaming`: the file's bytes already went into a scratch database while the file was being
 * written (deploy tees its fresh dump into the new slot); the attempt then checks the file,
 * waits for that load instead of starting one, and proves it the same way.
 */
export async function restoreBackup(file: string, options: RestoreOptions, attempt = 1, streaming?: StreamLoad): Promise<RestoreResult> {
  const { target, $, log } = options;
  const now = options.now ?? (() => new Date());
  const started = Date.now();
  const stamp = backupStamp(now());
  const name = basename(file);
  let scratch: string | undefined;
  let backup: CheckedBackup | undefined;
  let expected: Fingerprint | null = null;
  let actual: Fingerprint | null = null;
  let differences: FingerprintDifference[] = [];
  const result = (ok: boolean, reason: string | undefined, diagnostics: string | undefined, previousDatabase?: string): RestoreResult => ({
    file,
    ok,
    reason,
    diagnostics,
    fingerprint: actual?.sha256 ?? null,
    durationMs: Date.now() - started,
    touchedDatabase: scratch !== undefined,
    previousDatabase,
  });

  log.info(`Restore attempt ${attempt}: ${name} into '${target.database}' in container '${target.container}'${options.drillOnly ? ' (drill: scratch database only)' : ''}`);
  const checked = await checkBackupFile(file, { requireManifest: !options.noVerify, identities: options.identities });
  if (!checked.ok) {
    if (streaming) {
      scratch = streaming.database;
      await streaming.abort();
      await dropScratch(oneShotSql($, target), scratch, log);
    }
    log.error(`Rejected ${name}${streaming ? '' : ' before touching any database'}: ${checked.reason}`);
    const rejectedManifest = readManifest(file);
    const diagnostics = writeDiagnostics(options.logDir, stamp, attempt, {
      time: now().toISOString(), file, target: { container: target.container, database: target.database, user: target.user, scratchDatabase: scratch },
      error: checked.reason, expectedFingerprint: null, actualFingerprint: null, differences: [],
      postgres: {
        backupServer: rejectedManifest?.postgres?.server,
        backupPgDump: rejectedManifest?.postgres?.pgDump,
        // Not asked when no database was touched: a `docker exec` costs more than the read that rejected the file.
        targetServer: streaming ? await serverVersion(oneShotSql($, target)) : 'not asked: the file was rejected before any database was touched',
      },
      settings: { noVerify: options.noVerify === true, drillOnly: options.drillOnly === true },
    });
    return result(false, checked.reason, diagnostics);
  }
  backup = checked.backup;
  expected = backup.manifest?.fingerprint ?? null;
  log.info(`Checked ${name}: sha256 ${backup.sha256} matches${backup.manifest ? ' its manifest' : ''}${backup.encrypted ? ', decrypts and authenticates to its end' : ''}, dump complete`);
  if (!expected) log.warn(`${name} has no fingerprint in a manifest: the restored data cannot be proven identical`);

  const admin = new AdminSession(target);
  // The proof's session connects to the scratch database while the dump loads, so the
  // fingerprint starts the moment the load commits; it is closed before the swap renames it.
  let proof: PsqlSession | undefined;
  const connectProof = (database: string) => PsqlSession.open({ docker: target.docker, container: target.container, user: target.user, database });
  try {
    if (streaming) {
      scratch = streaming.database;
      proof = connectProof(scratch);
      await streaming.finish();
    } else {
      scratch = scratchName(target, options.drillOnly ? 'drill' : 'restore', stamp);
      await createScratch(admin.sql, scratch);
      proof = connectProof(scratch);
      await loadDump(backup, target, scratch, options.identities);
    }
    log.info(`Restored ${name} into '${scratch}'`);
    actual = await fingerprintDatabase(proof, expected);
    await proof.close();
    proof = undefined;
    if (expected) {
      differences = compareFingerprints(expected, actual);
      if (actual.sha256 !== expected.sha256) {
        throw new CliError(`the fingerprint of the restored data differs from the backup's (${differences.length} difference(s): ${differences.map((d) => d.name).slice(0, 5).join(', ')})`);
      }
      log.info(`Fingerprint proven: ${actual.sha256}`);
    }
    if (options.drillOnly) {
      await admin.sql(`DROP DATABASE ${quoteIdent(scratch)} WITH (FORCE);`);
      return result(true, undefined, undefined);
    }
    const previous = await swapDatabases(admin.sql, target, scratch, stamp, log);
    return result(true, undefined, undefined, previous);
  } catch (error) {
    const reason = errorText(error);
    log.error(`Restore of ${name} failed: ${reason}`);
    proof?.kill();
    if (scratch) {
      await streaming?.abort();
      await dropScratch(admin.sql, scratch, log);
    }
    const diagnostics = writeDiagnostics(options.logDir, stamp, attempt, {
      time: now().toISOString(), file, target: { container: target.container, database: target.database, user: target.user, scratchDatabase: scratch },
      error: reason, expectedFingerprint: expected?.sha256 ?? null, actualFingerprint: actual?.sha256 ?? null, differences,
      postgres: { backupServer: backup.manifest?.postgres.server, backupPgDump: backup.manifest?.postgres.pgDump, targetServer: await serverVersion(admin.sql) },
      settings: { noVerify: options.noVerify === true, drillOnly: options.drillOnly === true },
    });
    log.error(`Diagnostics written to ${diagnostics}`);
    return result(false, reason, diagnostics);
  } finally {
    proof?.kill();
    await admin.close();
  }
}

/** The fallback chain: candidates newest first; the first that restores and proves its fingerprint wins. */
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
    if (i + 1 < files.length) options.log.warn(`Falling back to the next older backup: ${basename(files[i + 1]!)}`);
  }
  return { winner: undefined, attempts };
}

/** Makes the previous database live again; the current live one becomes the previous. */
export async function rollbackDatabase(target: RestoreTarget, log: Logger, now = new Date()): Promise<{ restored: string; previous: string }> {
  const pattern = previousPattern(target.database);
  const admin = new AdminSession(target);
  try {
    const candidates = (await admin.sql('SELECT datname FROM pg_database ORDER BY datname DESC;')).split('\n').filter((n) => pattern.test(n));
    const newest = candidates[0];
    if (!newest) throw new CliError(`there is no previous database of '${target.database}' to roll back to`, { advice: 'A previous database is kept by each restore; none exists in this container.' });
    const previous = await swapDatabases(admin.sql, target, newest, backupStamp(now), log);
    return { restored: newest, previous: previous ?? '' };
  } finally {
    await admin.close();
  }
}
