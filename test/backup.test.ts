// The pure parts of runBackup's phases: verify's decision, the placement names, the snapshot
// row, the manifest; and the folder checks of preflight on real folders.
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fsPlaceCalls } from '../lib/host/atomic-file.ts';
import { buildManifest, dumpProblems, parseSnapshotRow, placeBackup, placementNames } from '../lib/backup/run.ts';
import type { DumpResult } from '../lib/dump/pg-dump.ts';
import { UsageError } from '../lib/errors.ts';
import { resolveSettings } from '../lib/settings.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';
import { checkBackupDirectories } from '../lib/store/folders.ts';

const inspection = {
  complete: true,
  restrictMatched: true,
  gzipIntact: true,
  gzipError: undefined,
  sqlBytes: 10,
  sequences: [],
  serverVersion: '15.18',
  pgDumpVersion: '15.18',
};
const dump: DumpResult = { bytes: 5, dumpBytes: 5, sha256: 'f'.repeat(64), inspection, durationMs: 1 };

const phases = suite('backup phases (pure)');

phases('verify: a whole dump passes; each defect is named', () => {
  assert.equal(dumpProblems(dump, 'gzip'), []);
  assert.equal(dumpProblems({ ...dump, bytes: 0 }, 'gzip'), ['the dump is empty']);
  assert.equal(
    dumpProblems({ ...dump, inspection: { ...inspection, gzipIntact: false, gzipError: 'unexpected end' } }, 'gzip'),
    ['the gzip stream is broken (unexpected end)'],
  );
  assert.equal(dumpProblems({ ...dump, inspection: { ...inspection, gzipIntact: false, gzipError: 'x' } }, 'custom'), [
    'the archive is broken (x)',
  ]);
  assert.equal(
    dumpProblems({ ...dump, inspection: { ...inspection, complete: false, restrictMatched: false } }, 'plain'),
    [
      "pg_dump's completion trailer '-- PostgreSQL database dump complete' is missing",
      'the closing \\unrestrict line does not match the opening \\restrict',
    ],
  );
  assert.equal(
    dumpProblems(
      { bytes: 0, inspection: { ...inspection, gzipIntact: false, gzipError: 'x', complete: false } },
      'gzip',
    ).length,
    3,
    'every defect at once',
  );
});

phases('place: the start second, then the next ones; the first free name wins and nothing is replaced', () => {
  const start = new Date(2026, 0, 2, 3, 4, 5);
  assert.equal(placementNames(start, 'gzip', false, 3), [
    'planetarion_backup_20260102_030405.sql.gz',
    'planetarion_backup_20260102_030406.sql.gz',
    'planetarion_backup_20260102_030407.sql.gz',
  ]);
  assert.is(placementNames(start, 'custom', true, 1)[0], 'planetarion_backup_20260102_030405.dump.age');
  const dir = makeTempDir();
  try {
    const names = placementNames(start, 'gzip', false, 3);
    writeFileSync(join(dir, names[0]!), 'earlier');
    writeFileSync(join(dir, 'temp'), 'new');
    const noLinks = {
      ...fsPlaceCalls,
      link: () => {
        throw Object.assign(new Error('EPERM'), { code: 'EPERM' });
      },
    };
    assert.equal(placeBackup(dir, join(dir, 'temp'), names, noLinks).name, names[1]);
    assert.is(readFileSync(join(dir, names[0]!), 'utf8'), 'earlier');
    assert.is(readFileSync(join(dir, names[1]!), 'utf8'), 'new');
  } finally {
    removeTempDir(dir);
  }
});

phases(
  'snapshot: the exported snapshot, the server, the WAL position with its cluster (none when not readable)',
  () => {
    assert.equal(parseSnapshotRow(['00000003-1', '15.18', '0/1A2B3C', '7312345678901234567']), {
      snapshot: '00000003-1',
      server: '15.18',
      wal: { lsn: '0/1A2B3C', systemIdentifier: '7312345678901234567' },
    });
    assert.equal(parseSnapshotRow(['s', '15.18', '0/10', '']).wal, { lsn: '0/10', systemIdentifier: null });
    assert.is(parseSnapshotRow(['s', '15.18', '', '']).wal, undefined);
  },
);

phases('manifest: records the sequence and the WAL position beside what it always had', () => {
  const settings = resolveSettings({ env: { PLANETARION_DIR: '/x' }, readFile: () => undefined });
  const run = {
    started: new Date('2026-01-02T03:04:05Z'),
    now: () => new Date(),
    format: 'gzip' as const,
    recipients: [],
    encrypted: false,
  };
  const wal = { lsn: '0/10', systemIdentifier: '1' };
  const manifest = buildManifest(settings, {
    file: 'f',
    run,
    sequence: 9,
    dump,
    fingerprint: null,
    snapshot: { snapshot: 's', server: '15.18', wal },
    state: { image: 'i', imageId: 'id' },
    durations: { total: 1, dump: 1, fingerprint: null },
  });
  assert.is(manifest.sequence, 9);
  assert.equal(manifest.wal, wal);
  assert.is(manifest.created, '2026-01-02T03:04:05.000Z');
  assert.is(manifest.compression, 'gzip');
  assert.is(
    buildManifest(settings, {
      file: 'f',
      run,
      sequence: 1,
      dump,
      fingerprint: null,
      snapshot: undefined,
      state: { image: undefined, imageId: undefined },
      durations: { total: 1, dump: 1, fingerprint: null },
    }).wal,
    undefined,
  );
});
phases.run();

const folders = suite('preflight: the folders');
let dir = '';
folders.before.each(() => {
  dir = makeTempDir();
});
folders.after.each(() => removeTempDir(dir));

const settingsFor = (base: string) => resolveSettings({ env: { PLANETARION_DIR: base }, readFile: () => undefined });

folders(
  'a base, backup or log folder of ours writable by group or others is made private with a warning; a dry run only says so',
  () => {
    mkdirSync(join(dir, 'backups'), { mode: 0o700 });
    mkdirSync(join(dir, 'logs'), { mode: 0o700 });
    assert.equal(checkBackupDirectories(settingsFor(dir), false), []);
    for (const [folder, mode, who, fixed] of [
      [dir, 0o770, 'its group', 0o750],
      [join(dir, 'backups'), 0o707, 'others', 0o705],
      [join(dir, 'logs'), 0o777, 'its group and others', 0o755],
    ] as const) {
      chmodSync(folder, mode);
      const [dry] = checkBackupDirectories(settingsFor(dir), false);
      assert.match(
        dry!,
        `'${folder}' is writable by ${who} (mode 0${mode.toString(8)}): a real run makes it 0${fixed.toString(8)}`,
      );
      assert.is(statSync(folder).mode & 0o777, mode);
      const [note] = checkBackupDirectories(settingsFor(dir), true);
      assert.match(
        note!,
        `'${folder}' was writable by ${who} (mode 0${mode.toString(8)}); made it 0${fixed.toString(8)} (chmod go-w)`,
      );
      assert.is(statSync(folder).mode & 0o777, fixed);
      chmodSync(folder, 0o700);
    }
  },
);

folders(
  'a folder of another user writable by group or others is refused with the chmod that fixes it, its mode untouched',
  () => {
    mkdirSync(join(dir, 'backups'), { mode: 0o700 });
    chmodSync(join(dir, 'backups'), 0o777);
    chownSync(join(dir, 'backups'), 65534, 65534);
    try {
      checkBackupDirectories(settingsFor(dir), true);
      assert.unreachable('a foreign open folder passed');
    } catch (error) {
      assert.instance(error, UsageError);
      assert.match(
        (error as Error).message,
        `'${join(dir, 'backups')}' is writable by its group and others (mode 0777) and owned by uid 65534, not this user`,
      );
      assert.match((error as UsageError).advice!, `chmod go-w ${join(dir, 'backups')}`);
    }
    assert.is(statSync(join(dir, 'backups')).mode & 0o777, 0o777);
  },
);

folders('a file where a folder should be is refused as not a directory', () => {
  writeFileSync(join(dir, 'backups'), '');
  assert.throws(
    () => checkBackupDirectories(settingsFor(dir), false),
    /PLANETARION_BACKUP_DIR '.*backups' is not a directory/,
  );
});
folders.run();
