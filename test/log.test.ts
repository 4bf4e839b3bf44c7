import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger, rotateLogFile } from '../lib/log.ts';
import { suiteTempDir } from './helpers/tmp.ts';
import { formatTimestamp } from '../lib/format.ts';

const logger = suite('Logger');
const dir = suiteTempDir(logger, { each: true });

const fixed = () => new Date(2023, 11, 1, 2, 0, 5);

logger('a symlink planted at the log file is refused with one line (exit 2), its target never written', () => {
  mkdirSync(join(dir(), 'logs'), { mode: 0o700 });
  writeFileSync(join(dir(), 'victim'), 'precious');
  symlinkSync(join(dir(), 'victim'), join(dir(), 'logs', 'backup.log'));
  assert.throws(
    () => new Logger({ file: join(dir(), 'logs', 'backup.log'), stderr: null }),
    (error: Error & { exitCode?: number }) =>
      /backup\.log is a symbolic link/.test(error.message) && error.exitCode === 2,
  );
  assert.is(readFileSync(join(dir(), 'victim'), 'utf8'), 'precious');
});

logger('writes timestamped level lines to the file (0600, dir 0700) and to stderr', () => {
  const lines: string[] = [];
  const stderr = { write: (s: string) => lines.push(s) } as unknown as NodeJS.WritableStream;
  const file = join(dir(), 'logs', 'backup.log');
  const log = new Logger({ file, stderr, now: fixed });
  log.error("Database container 'planetarion-db' is not running");
  log.info('two\nlines');
  const text = readFileSync(file, 'utf8');
  assert.is(
    text,
    "[2023-12-01 02:00:05] ERROR - Database container 'planetarion-db' is not running\n[2023-12-01 02:00:05] INFO - two\n    lines\n",
  );
  assert.is(lines.join(''), text);
  assert.is(statSync(file).mode & 0o777, 0o600);
  assert.is(statSync(join(dir(), 'logs')).mode & 0o777, 0o700);
});

logger('rotates a log larger than maxBytes at open, keeping N old files', () => {
  const file = join(dir(), 'backup.log');
  writeFileSync(file, 'x'.repeat(100));
  writeFileSync(`${file}.1`, 'old1');
  writeFileSync(`${file}.2`, 'old2');
  const log = new Logger({ file, stderr: null, maxBytes: 50, keepRotated: 2, now: fixed });
  log.info('fresh');
  assert.is(readFileSync(`${file}.1`, 'utf8'), 'x'.repeat(100));
  assert.is(readFileSync(`${file}.2`, 'utf8'), 'old1');
  assert.not.ok(existsSync(`${file}.3`));
  assert.match(readFileSync(file, 'utf8'), /INFO - fresh/);
  assert.not.ok(rotateLogFile(file, 50, 2), 'a small file is left alone');
});

logger('does not write lines twice when stderr already is the log file (cron >> backup.log 2>&1)', async () => {
  const file = join(dir(), 'backup.log');
  const fd = openSync(file, 'a');
  const stream = createWriteStream('', { fd, autoClose: false });
  const log = new Logger({ file, stderr: stream, now: fixed });
  log.info('once');
  await new Promise<void>((resolve) => stream.end(resolve));
  closeSync(fd);
  assert.is(readFileSync(file, 'utf8'), '[2023-12-01 02:00:05] INFO - once\n');
});

logger(
  'rotates under cron too (stderr is the log file): the run ends the old file, the next run starts a new one',
  async () => {
    const file = join(dir(), 'backup.log');
    writeFileSync(file, 'x'.repeat(100));
    const fd = openSync(file, 'a');
    const stream = createWriteStream('', { fd, autoClose: false });
    const log = new Logger({ file, stderr: stream, maxBytes: 50, now: fixed });
    log.info('this run');
    await new Promise<void>((resolve) => stream.end(resolve));
    closeSync(fd);
    assert.is(readFileSync(`${file}.1`, 'utf8'), `${'x'.repeat(100)}[2023-12-01 02:00:05] INFO - this run\n`);
    assert.not.ok(existsSync(file), 'nothing written twice to a new file');
  },
);

logger('formatTimestamp pads every field', () => {
  assert.is(formatTimestamp(new Date(2024, 0, 2, 3, 4, 5)), '2024-01-02 03:04:05');
});
logger.run();
