// The order of backups and rotation's decisions, as data: by sequence, never by a clock.
import { mkdirSync, readFileSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  listBackups,
  orderWarnings,
  parseBackupName,
  sequenceFileName,
  takeSequence,
  type BackupFile,
} from '../lib/store/backup-files.ts';
import type { Fingerprint } from '../lib/dump/fingerprint.ts';
import { fallbackCandidates } from '../lib/restore/flow.ts';
import { planRotation, rotateBackups, rotationHoldReasons, type RotationFacts } from '../lib/store/rotate.ts';
import { makeTempDir, removeTempDir, suiteTempDir } from './helpers/tmp.ts';
import { formatBytes } from '../lib/format.ts';

/** A backup file as listBackups returns it: its name, and the sequence (and WAL) its manifest records. */
function backup(stamp: string, sequence?: number, wal?: { lsn: string; systemIdentifier: string }): BackupFile {
  return { ...parseBackupName(`planetarion_backup_${stamp}.sql.gz`, '/b')!, sequence, wal };
}
const names = (list: BackupFile[]) => list.map((b) => b.stamp);

const order = suite('order and rotation plan');

order('numbered backups go by sequence, whatever their stamps say: a clock set back a day', () => {
  // Sequence 1 was taken before the clock was set back a day, 2 and 3 after.
  const list = [backup('20260102_020000', 1), backup('20260101_100000', 2), backup('20260101_180000', 3)];
  assert.equal(names(planRotation(list, 2, [])), ['20260102_020000']);
  assert.equal(names(planRotation(list, 1, ['planetarion_backup_20260101_100000.sql.gz'])), ['20260102_020000']);
});

order('a DST fall-back hour: the local stamps of the hour come twice, the order is by sequence', () => {
  // 02:30 and 02:45, then the clock falls back to 02:00: 02:15, and 02:30 again (its name taken, so 02:30:01).
  const list = [
    backup('20261025_023000', 1),
    backup('20261025_024500', 2),
    backup('20261025_021500', 3),
    backup('20261025_023001', 4),
  ];
  assert.equal(
    planRotation(list, 2, []).map((b) => b.sequence),
    [2, 1],
  );
});

order('files without a numbered manifest are older than every numbered one, by their stamps among themselves', () => {
  const copiedIn = backup('20991231_235959'); // copied in with a later stamp
  const legacy = backup('20231201_020000');
  const list = [legacy, backup('20260101_020000', 7), copiedIn, backup('20260101_100000', 8)];
  assert.equal(names(planRotation(list, 2, [])), ['20991231_235959', '20231201_020000']);
  assert.equal(names(planRotation(list, 3, [])), ['20231201_020000']);
});

order('reports a backup dated in the future, and a newer sequence at an older WAL position of the same cluster', () => {
  const now = new Date(2026, 0, 1, 12, 0, 0);
  const cluster = 'c1';
  const list = [
    backup('20260102_120000', 3, { lsn: '0/5000000', systemIdentifier: cluster }),
    backup('20260101_100000', 2, { lsn: '1/0', systemIdentifier: cluster }),
    backup('20260101_020000', 1, { lsn: '0/10', systemIdentifier: 'other cluster' }),
  ];
  const warnings = orderWarnings(list, now);
  assert.is(warnings.length, 2, warnings.join('\n'));
  assert.match(warnings[0]!, /planetarion_backup_20260102_120000\.sql\.gz is dated in the future/);
  assert.match(
    warnings[1]!,
    /20260102_120000.* \(sequence 3\) was taken at WAL 0\/5000000, before .*20260101_100000.* \(sequence 2\) at 1\/0/,
  );
  assert.equal(orderWarnings(list.slice(1), now), [], 'positions of different clusters are not compared');
});
order.run();

const hold = suite('rotation hold');
const fingerprint = (rows: Record<string, number>, excluded: string[] = []): Fingerprint => ({
  sha256: 'x',
  tables: Object.entries(rows).map(([table, n]) => ({ schema: 'public', table, rows: n, digest: '0' })),
  sequences: [],
  excluded,
});
const facts = (size: number, rows?: Record<string, number>, excluded?: string[]): RotationFacts => ({
  name: `b${size}`,
  size,
  format: 'gzip',
  encrypted: false,
  fingerprint: rows ? fingerprint(rows, excluded) : null,
});
const reasons = (current: RotationFacts, previous?: RotationFacts) =>
  rotationHoldReasons(current, previous, formatBytes);

hold('half the size of the previous backup of the same kind holds; growth, churn and another format do not', () => {
  assert.equal(reasons(facts(1000)), []);
  assert.equal(reasons(facts(600), facts(1000)), []);
  assert.match(reasons(facts(499), facts(1000))[0]!, /less than half the size of the previous one, b1000/);
  assert.equal(reasons({ ...facts(100), format: 'custom' }, facts(1000)), []);
});

hold('a table of 100+ rows losing more than half, or a table of 10+ rows emptied or gone, holds', () => {
  const previous = facts(1000, { players: 1000, planets: 100, sessions: 9, news: 10, gone: 50 });
  assert.equal(reasons(facts(1000, { players: 501, planets: 50, sessions: 0, news: 1, gone: 25 }), previous), []);
  const held = reasons(facts(1000, { players: 499, planets: 100, sessions: 0, news: 0 }), previous);
  assert.equal(held, [
    'table public.players has 499 rows, 1000 in the previous backup b1000',
    'table public.news has 0 rows, 10 in the previous backup b1000',
    'table public.gone is gone, 50 in the previous backup b1000',
  ]);
  assert.equal(
    reasons(facts(1000, { players: 1000, planets: 100, sessions: 9, news: 10 }, ['public.gone']), previous),
    [],
    'a table now excluded is not lost',
  );
  assert.equal(reasons(facts(1000, { players: 0 }), facts(1000)), [], 'no fingerprint before: nothing to compare');
});
hold.run();

const disk = suite('on disk: the sequence file, manifests, drills');
const dir = suiteTempDir(disk, { each: true });

/** Writes a backup with a manifest (`sequence`, `file` as given) into dir; mtime set to its stamp. */
function writeBackup(stamp: string, manifest: Record<string, unknown> | undefined): string {
  const name = `planetarion_backup_${stamp}.sql.gz`;
  writeFileSync(join(dir(), name), 'data');
  if (manifest) writeFileSync(join(dir(), `${name}.json`), JSON.stringify({ file: name, ...manifest }));
  const when = parseBackupName(name)!.time;
  utimesSync(join(dir(), name), when, when);
  return name;
}

disk('takeSequence: one more than the counter and every manifest, stored 0600 before use', () => {
  assert.is(takeSequence(dir()), 1);
  assert.is(takeSequence(dir()), 2);
  writeBackup('20260101_020000', { sequence: 41 });
  assert.is(takeSequence(dir()), 42);
  writeFileSync(join(dir(), sequenceFileName), 'garbage');
  assert.is(takeSequence(dir()), 42, 'a damaged counter: the manifests still count');
  assert.is(readFileSync(join(dir(), sequenceFileName), 'utf8'), '42\n');
});

disk(
  "a manifest counts only for its own file: a backup copied in with its manifest does not take the original's place",
  () => {
    const original = writeBackup('20260101_020000', { sequence: 5 });
    writeBackup('20260101_100000', { sequence: 6 });
    const copy = 'planetarion_backup_20270101_000000.sql.gz';
    writeFileSync(join(dir(), copy), 'data');
    writeFileSync(join(dir(), `${copy}.json`), readFileSync(join(dir(), `${original}.json`)));
    assert.equal(
      listBackups(dir()).map((b) => [b.name.slice(19, 34), b.sequence ?? null]),
      [
        ['20260101_100000', 6],
        ['20260101_020000', 5],
        ['20270101_000000', null],
      ],
    );
  },
);

disk('a file where the backup folder should be is one clear line (exit 2), not a stack', () => {
  writeFileSync(join(dir(), 'backups'), '');
  assert.throws(
    () => listBackups(join(dir(), 'backups')),
    (error: Error & { exitCode?: number }) =>
      /the backup folder '.*backups' is not a directory/.test(error.message) && error.exitCode === 2,
  );
});

disk('rotation never deletes the newest backup that passed a restore drill', () => {
  const drilled = writeBackup('20260101_020000', {
    sequence: 1,
    lastDrill: { passed: true, time: 'x', durationMs: 1, detail: '' },
  });
  writeBackup('20260101_100000', { sequence: 2, lastDrill: { passed: false, time: 'x', durationMs: 1, detail: '' } });
  writeBackup('20260101_180000', { sequence: 3 });
  const newest = writeBackup('20260102_020000', { sequence: 4 });
  mkdirSync(join(dir(), 'sub'));
  assert.equal(rotateBackups(dir(), 1, [newest]), [
    'planetarion_backup_20260101_180000.sql.gz',
    'planetarion_backup_20260101_100000.sql.gz',
  ]);
  assert.equal(
    listBackups(dir()).map((b) => b.name),
    [newest, drilled],
  );
});
disk('--fallback candidates: the backups older by sequence, whatever their stamps say (a clock set back a day)', () => {
  // Sequence 10 before the clock went back a day, 20 and 30 after; an unnumbered legacy file is the oldest.
  const legacy = writeBackup('20231201_020000', undefined);
  const first = writeBackup('20260102_020000', { sequence: 10 });
  const second = writeBackup('20260101_100000', { sequence: 20 });
  const third = writeBackup('20260101_180000', { sequence: 30 });
  const at = (name: string) => join(dir(), name);
  assert.equal(fallbackCandidates(at(third), dir()), [third, second, first, legacy].map(at));
  // Chosen by name: sequence 10's later stamp does not drop it, nor does sequence 30's earlier stamp add it.
  assert.equal(fallbackCandidates(at(second), dir()), [second, first, legacy].map(at));
  assert.equal(fallbackCandidates(at(first), dir()), [first, legacy].map(at));
  // A file from elsewhere: by its own manifest's number, else by its stamp (numbered ones are newer).
  const elsewhere = makeTempDir();
  try {
    const outside = 'planetarion_backup_20300101_000000.sql.gz';
    writeFileSync(join(elsewhere, outside), 'data');
    writeFileSync(join(elsewhere, `${outside}.json`), JSON.stringify({ file: outside, sequence: 15 }));
    assert.equal(fallbackCandidates(join(elsewhere, outside), dir()), [
      join(elsewhere, outside),
      ...[first, legacy].map(at),
    ]);
    writeFileSync(join(elsewhere, `${outside}.json`), '{}');
    assert.equal(fallbackCandidates(join(elsewhere, outside), dir()), [join(elsewhere, outside), at(legacy)]);
  } finally {
    removeTempDir(elsewhere);
  }
});
disk.run();

const old = suite("the old scripts' backups");
const oldDir = suiteTempDir(old, { prefix: 'planetarion-old-backups-' });
/** A backup file as the old script wrote it: plain SQL, its trailer lines appended, no sidecars. */
function oldBackup(name: string): void {
  writeFileSync(
    join(oldDir(), name),
    'SELECT 1;\n--\n-- PostgreSQL database dump complete\n--\n\n-- GAME_STATE_HASH: unavailable\n-- BACKUP_TIMESTAMP: 20231201_020000\n',
  );
}
/** A backup of this tool: gzip, with its manifest's sequence and a checksum file. */
function newBackup(stamp: string, sequence: number): void {
  const name = `planetarion_backup_${stamp}.sql.gz`;
  writeFileSync(join(oldDir(), name), 'x');
  writeFileSync(join(oldDir(), `${name}.json`), JSON.stringify({ file: name, sequence }));
  writeFileSync(join(oldDir(), `${name}.sha256`), `0  ${name}\n`);
}

old('both names the old script wrote parse as old script backups; a hash is never part of another format', () => {
  const hashed = parseBackupName('planetarion_backup_20231201_020000_unavailable.sql')!;
  assert.is(hashed.origin, 'old-script');
  assert.is(hashed.format, 'plain');
  assert.is(hashed.stamp, '20231201_020000');
  assert.is(
    parseBackupName('planetarion_backup_20231201_020000.sql')!.origin,
    'tool',
    'by name alone; listBackups looks at the sidecars',
  );
  assert.is(parseBackupName('planetarion_backup_20231201_020000_abc.sql.gz'), undefined);
  assert.is(parseBackupName('planetarion_backup_20231201_020000_.sql'), undefined);
});
old("on disk: plain SQL without sidecars is the old script's; with a manifest and checksum it is ours", () => {
  oldBackup('planetarion_backup_20231201_020000.sql');
  oldBackup('planetarion_backup_20231201_100000_unavailable.sql');
  writeFileSync(join(oldDir(), 'planetarion_backup_20231201_180000.sql'), 'x');
  writeFileSync(
    join(oldDir(), 'planetarion_backup_20231201_180000.sql.json'),
    JSON.stringify({ file: 'planetarion_backup_20231201_180000.sql', sequence: 1 }),
  );
  writeFileSync(join(oldDir(), 'planetarion_backup_20231201_180000.sql.sha256'), 'x');
  assert.equal(
    listBackups(oldDir()).map((b) => [b.stamp, b.origin]),
    [
      ['20231201_180000', 'tool'],
      ['20231201_100000', 'old-script'],
      ['20231201_020000', 'old-script'],
    ],
  );
  unlinkSync(join(oldDir(), 'planetarion_backup_20231201_180000.sql'));
  for (const ext of ['.json', '.sha256']) unlinkSync(join(oldDir(), `planetarion_backup_20231201_180000.sql${ext}`));
});
old(
  'rotation (keep 3) removes none of them until 3 backups of this tool exist, then counts them like any older backup',
  () => {
    newBackup('20260101_020000', 1);
    newBackup('20260101_100000', 2);
    assert.equal(
      rotateBackups(oldDir(), 3, []),
      [],
      'two verified backups: the old ones are all there is to fall back on',
    );
    newBackup('20260101_180000', 3);
    assert.equal(rotateBackups(oldDir(), 3, []), [
      'planetarion_backup_20231201_100000_unavailable.sql',
      'planetarion_backup_20231201_020000.sql',
    ]);
    assert.equal(
      listBackups(oldDir()).map((b) => b.sequence),
      [3, 2, 1],
    );
  },
);
old.run();
