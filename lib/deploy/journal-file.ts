// The deployment's journals (switch.json, replication.json, staging.json) are JSON files in
// <dir>/deploy/, written atomically and durably before the change they record, read first by every
// later run, and removed once what they record is complete or put back. One reader and writer for
// all of them: a journal that cannot be read is an error naming the file and what to do by hand,
// never "no journal".
import { mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic } from '../host/atomic-file.ts';
import { CliError } from '../errors.ts';
import { deployDirName } from './state.ts';

export interface JournalSpec {
  fileName: string;
  /** What the file is, in messages: `the switch journal`. */
  title: string;
  /** What it records, for the advice when it cannot be read. */
  records: string;
  /** Whether parsed JSON is a journal of this kind. */
  valid: (value: unknown) => boolean;
  /** What to do by hand with a corrupt one. */
  repair: string;
}

export interface JournalFile<T> {
  path: (dir: string) => string;
  /** The journal, or undefined when there is none. */
  read: (dir: string) => T | undefined;
  /** Writes it atomically and durably (0600, its folder 0700). */
  write: (dir: string, journal: T) => void;
  /** Removes it (none there is fine) and makes the removal durable. */
  remove: (dir: string) => void;
}

export function journalFile<T>(spec: JournalSpec): JournalFile<T> {
  const path = (dir: string) => join(dir, deployDirName, spec.fileName);
  return {
    path,
    read(dir) {
      let text: string;
      try {
        text = readFileSync(path(dir), 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new CliError(`cannot read ${spec.title} ${path(dir)}: ${(error as Error).message}`, {
          advice: `Check the file and its permissions; it records ${spec.records}.`,
        });
      }
      let journal: unknown;
      try {
        journal = JSON.parse(text);
      } catch {
        // reported below
      }
      if (journal && typeof journal === 'object' && spec.valid(journal)) return journal as T;
      throw new CliError(`${spec.title} ${path(dir)} is corrupt`, { advice: spec.repair });
    },
    write(dir, journal) {
      mkdirSync(join(dir, deployDirName), { recursive: true, mode: 0o700 });
      writeFileAtomic(path(dir), `${JSON.stringify(journal, null, 2)}\n`);
    },
    remove(dir) {
      try {
        unlinkSync(path(dir));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
      fsyncDir(join(dir, deployDirName));
    },
  };
}
