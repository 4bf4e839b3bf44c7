// The timestamped log: every step of a run goes to <logs>/backup.log and to stderr.
// QNAP has no logrotate, so the file rotates itself by size.
import {
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  renameSync,
  statSync,
  existsSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { UsageError } from './errors.ts';
import { formatTimestamp } from './format.ts';

export type LogLevel = 'INFO' | 'WARN' | 'ERROR';

export interface LoggerOptions {
  /** The log file; undefined logs to stderr only. */
  file?: string;
  /** Where human-readable lines go; null for none. */
  stderr?: NodeJS.WritableStream | null;
  /** Rotate when the file is larger than this at open. */
  maxBytes?: number;
  /** How many rotated files (.1 .. .N) are kept. */
  keepRotated?: number;
  now?: () => Date;
}

/** Renames file -> file.1 -> file.2 ... when it has grown past maxBytes. */
export function rotateLogFile(file: string, maxBytes: number, keepRotated: number): boolean {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return false;
  }
  if (size <= maxBytes) return false;
  for (let i = keepRotated - 1; i >= 1; i--) {
    if (existsSync(`${file}.${i}`)) renameSync(`${file}.${i}`, `${file}.${i + 1}`);
  }
  renameSync(file, `${file}.1`);
  return true;
}

/** True when the stream is the very file (cron's `>> backup.log 2>&1`), so lines are not written twice. */
function streamIsFile(stream: NodeJS.WritableStream | null | undefined, file: string): boolean {
  const fd = (stream as { fd?: number } | null | undefined)?.fd;
  if (typeof fd !== 'number') return false;
  try {
    const a = fstatSync(fd);
    const b = statSync(file);
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/** Appends to the log, creating it 0600; a symlink at its name is refused (ELOOP), never followed. */
const appendFlags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

/** Appends one line to the log file. */
function appendLine(file: string, line: string): void {
  const fd = openSync(file, appendFlags, 0o600);
  try {
    writeSync(fd, line);
  } finally {
    closeSync(fd);
  }
}

/** Opens the log once at start, so a planted symlink or a folder in its place is one clear line. */
function checkLogFile(file: string): void {
  try {
    closeSync(openSync(file, appendFlags, 0o600));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const what =
      code === 'ELOOP'
        ? 'is a symbolic link'
        : code === 'EISDIR'
          ? 'is a directory'
          : `cannot be opened (${(error as Error).message})`;
    throw new UsageError(
      `the log file ${file} ${what}`,
      `Remove or fix ${file}: the log is only ever written to a regular file in the log folder.`,
    );
  }
}

/** Writes `[timestamp] LEVEL - message` lines to the log file and stderr. */
export class Logger {
  readonly file: string | undefined;
  private readonly stderr: NodeJS.WritableStream | null;
  private readonly now: () => Date;
  private readonly fileIsStderr: boolean;

  constructor(options: LoggerOptions = {}) {
    this.file = options.file;
    this.stderr = options.stderr === undefined ? process.stderr : options.stderr;
    this.now = options.now ?? (() => new Date());
    this.fileIsStderr = this.file !== undefined && streamIsFile(this.stderr, this.file);
    if (this.file) {
      mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
      // Under cron (`>> backup.log 2>&1`) the file rotates too, or it would grow forever: this
      // run's lines then end backup.log.1 through stderr, and the next run starts a new file.
      rotateLogFile(this.file, options.maxBytes ?? 5 * 1024 * 1024, options.keepRotated ?? 3);
      if (!this.fileIsStderr) checkLogFile(this.file);
    }
  }

  info(message: string): void {
    this.write('INFO', message);
  }
  warn(message: string): void {
    this.write('WARN', message);
  }
  error(message: string): void {
    this.write('ERROR', message);
  }

  /** One line per call; multi-line messages are indented so each log line still starts with a timestamp. */
  write(level: LogLevel, message: string): void {
    const line = `[${formatTimestamp(this.now())}] ${level} - ${message.replace(/\n/g, '\n    ')}\n`;
    if (this.file && !this.fileIsStderr) appendLine(this.file, line);
    this.stderr?.write(line);
  }
}
