// A long-lived psql inside the database container, driven over stdin. The backup uses one to
// export a snapshot and then to fingerprint that same snapshot while pg_dump streams it.
import { spawn } from 'node:child_process';
import { CliError } from '../errors.ts';

/** Separates fields in psql's unaligned output; cannot occur in the catalog names we read back raw. */
const FIELD = '\x1f';

/** SQL text ending in exactly one `;`, so psql runs it at once. */
const terminated = (sql: string) => sql.trim().replace(/;?$/, ';');

/** Runs one SQL text against a database and resolves with psql's unaligned output. */
export type Sql = (sql: string) => Promise<string>;

/**
 * Connection options (docker exec -e PGOPTIONS) that turn off the timeouts a role or database
 * may set for the application: they apply from the first statement, which a `SET` cannot do
 * (the SET itself runs under the role's statement_timeout), and override role settings.
 */
export const noTimeoutsPgOptions = '-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0';

export interface PsqlTarget {
  docker: string;
  container: string;
  user: string;
  database: string;
}

/** Statements in an open session, the output shaped as psql -A -t prints it (fields joined by '|'). */
export const sessionSql =
  (session: PsqlSession): Sql =>
  async (sql) =>
    (await session.query(sql)).map((row) => row.join('|')).join('\n');

/** How a session reaches its psql: psql's standard input, and a way to stop it at once. */
export interface PsqlChannel {
  write(text: string): void;
  /** Writes the last text and closes psql's input. */
  end(text: string): void;
  kill(): void;
}

/**
 * A psql session: send SQL, read rows back. Close it to end the transaction and the process.
 * Its psql runs in an exec of its own (`open`), or inside another process that feeds back what
 * psql writes (`over`: the backup's session runs in the dump's own exec, dump/pg-dump.ts).
 */
export class PsqlSession {
  private buffer = '';
  private stderr = '';
  private exited: { code: number | null } | undefined;
  private waiter: (() => void) | undefined;
  private readonly onExit: (() => void)[] = [];
  private counter = 0;
  /** The messages of the failures tryQuery answered with (psql printed them to stderr too). */
  private readonly handled: string[] = [];

  private constructor(private readonly channel: PsqlChannel) {}

  /** Starts psql in the container, in an exec of its own. */
  static open(target: PsqlTarget): PsqlSession {
    const args = [
      'exec',
      '-i',
      '-e',
      `PGOPTIONS=${noTimeoutsPgOptions}`,
      target.container,
      ...psqlSessionArgs(target.user, target.database),
    ];
    const child = spawn(target.docker, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const session = new PsqlSession({
      write: (text) => child.stdin.write(text),
      end: (text) => child.stdin.end(text),
      kill: () => child.kill('SIGKILL'),
    });
    child.stdout.setEncoding('utf8').on('data', (d: string) => session.output(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => session.messages(d));
    child.on('close', (code) => session.ended(code));
    child.on('error', (error) => session.messages(String(error)));
    // A closed stdin after the process died must not crash the tool.
    child.stdin.on('error', () => {});
    return session;
  }

  /** A session whose psql another process runs: that process passes on what psql writes, and its end. */
  static over(channel: PsqlChannel): PsqlSession {
    return new PsqlSession(channel);
  }

  /** What psql wrote to its standard output, as it comes. */
  output(text: string): void {
    this.buffer += text;
    this.waiter?.();
  }

  /** What psql wrote to its standard error (kept for the error a failed query throws). */
  messages(text: string): void {
    this.stderr += text;
  }

  /** psql has exited (or whatever ran it has): queries still waiting fail with its messages. */
  ended(code: number | null): void {
    if (this.exited) return;
    this.exited = { code };
    this.waiter?.();
    for (const resolve of this.onExit.splice(0)) resolve();
  }

  /** Runs SQL (one or more statements) and returns the rows of the last result as field arrays. */
  query(sql: string): Promise<string[][]> {
    return this.exchange(terminated(sql));
  }

  /**
   * Runs SQL whose failure must not end the session, as ON_ERROR_STOP would: under
   * ON_ERROR_ROLLBACK psql puts a savepoint before the statement and rolls back to it when the
   * statement fails, so the transaction (and the snapshot it holds) goes on. Resolves with the
   * rows, or with the message psql reported (LAST_ERROR_MESSAGE, psql 11 and later). psql still
   * prints that message to stderr: it is left out of the error of a later failure.
   */
  async tryQuery(sql: string): Promise<{ rows: string[][] } | { error: string }> {
    const failed = `__planetarion_failed_${++this.counter}__`;
    const rows = await this.exchange(
      [
        '\\set ON_ERROR_STOP off',
        '\\set ON_ERROR_ROLLBACK on',
        terminated(sql),
        '\\if :ERROR',
        `\\echo ${failed} :LAST_ERROR_MESSAGE`,
        '\\endif',
        '\\set ON_ERROR_ROLLBACK off',
        '\\set ON_ERROR_STOP on',
      ].join('\n'),
    );
    const failure = rows.find((row) => row[0]?.startsWith(failed));
    if (!failure) return { rows };
    const error = failure.join(' ').slice(failed.length).trim() || 'no message';
    this.handled.push(error);
    return { error };
  }

  /** Writes psql input (SQL and meta-commands, whole lines), then reads the rows it printed. */
  private async exchange(input: string): Promise<string[][]> {
    const marker = `__planetarion_done_${++this.counter}__`;
    this.channel.write(`${input}\n\\echo ${marker}\n`);
    for (;;) {
      const at = this.buffer.indexOf(`${marker}\n`);
      if (at >= 0) {
        const text = this.buffer.slice(0, at);
        this.buffer = this.buffer.slice(at + marker.length + 1);
        return text === ''
          ? []
          : text
              .replace(/\n$/, '')
              .split('\n')
              .map((line) => line.split(FIELD));
      }
      if (this.exited) {
        // Without the lines of the errors tryQuery already answered with.
        const messages = this.stderr
          .split('\n')
          .filter((line) => !this.handled.some((error) => line.includes(error)))
          .join('\n');
        throw new CliError(`psql in the container failed: ${messages.trim() || `exit ${this.exited.code}`}`);
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = undefined;
    }
  }

  /** Ends the session (and any transaction still open) and waits for psql to exit. */
  async close(): Promise<void> {
    if (this.exited) return;
    this.channel.end('\\q\n');
    await new Promise<void>((resolve) => (this.exited ? resolve() : this.onExit.push(resolve)));
  }

  /** Stops the session at once (on failure paths). */
  kill(): void {
    if (!this.exited) this.channel.kill();
  }
}

/** psql's arguments for a session: unaligned rows, fields split by FIELD, the first error ends it (dump/pg-dump.ts passes shell variables). */
export function psqlSessionArgs(user: string, database: string, field = FIELD): string[] {
  return ['psql', '-X', '-w', '-q', '-A', '-t', '-F', field, '-v', 'ON_ERROR_STOP=1', '-U', user, '-d', database];
}
