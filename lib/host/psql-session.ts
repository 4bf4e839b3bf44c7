// A long-lived psql inside the database container, driven over stdin. The backup uses one to
// export a snapshot and then to fingerprint that same snapshot while pg_dump streams it.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { CliError } from '../errors.ts';

/** Separates fields in psql's unaligned output; cannot occur in the catalog names we read back raw. */
const FIELD = '\x1f';

/**
 * Connection options (docker exec -e PGOPTIONS) that turn off the timeouts a role or database
 * may set for the application: they apply from the first statement, which a `SET` cannot do
 * (the SET itself runs under the role's statement_timeout), and override role settings.
 */
/** Runs one SQL text against a database and resolves with psql's unaligned output. */
export type Sql = (sql: string) => Promise<string>;

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

/** A psql session: send SQL, read rows back. Close it to end the transaction and the process. */
export class PsqlSession {
  private readonly child: ChildProcessWithoutNullStreams;
  private buffer = '';
  private stderr = '';
  private exited: { code: number | null } | undefined;
  private waiter: (() => void) | undefined;
  private counter = 0;

  private constructor(target: PsqlTarget) {
    const args = [
      'exec',
      '-i',
      '-e',
      `PGOPTIONS=${noTimeoutsPgOptions}`,
      target.container,
      'psql',
      '-X',
      '-q',
      '-A',
      '-t',
      '-F',
      FIELD,
      '-v',
      'ON_ERROR_STOP=1',
      '-U',
      target.user,
      '-d',
      target.database,
    ];
    this.child = spawn(target.docker, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => {
      this.buffer += d;
      this.waiter?.();
    });
    this.child.stderr.on('data', (d: string) => {
      this.stderr += d;
    });
    this.child.on('close', (code) => {
      this.exited = { code };
      this.waiter?.();
    });
    this.child.on('error', (error) => {
      this.stderr += String(error);
    });
    // A closed stdin after the process died must not crash the tool.
    this.child.stdin.on('error', () => {});
  }

  /** Starts psql in the container. */
  static open(target: PsqlTarget): PsqlSession {
    return new PsqlSession(target);
  }

  /** Runs SQL (one or more statements) and returns the rows of the last result as field arrays. */
  async query(sql: string): Promise<string[][]> {
    const marker = `__planetarion_done_${++this.counter}__`;
    this.child.stdin.write(`${sql.trim().replace(/;?$/, ';')}\n\\echo ${marker}\n`);
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
        throw new CliError(`psql in the container failed: ${this.stderr.trim() || `exit ${this.exited.code}`}`);
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = undefined;
    }
  }

  /** Ends the session (and any transaction still open) and waits for psql to exit. */
  async close(): Promise<void> {
    if (!this.exited) {
      this.child.stdin.end('\\q\n');
      await new Promise<void>((resolve) => {
        if (this.exited) resolve();
        else this.child.on('close', () => resolve());
      });
    }
  }

  /** Stops the session at once (on failure paths). */
  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}
