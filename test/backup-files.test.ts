// Backup names and stamps, as data: the one naming pattern every command reads and writes, the
// stamps in it (local time, as the old script's `date +%Y%m%d_%H%M%S`), the sidecars and temp
// names that belong to a backup, and the order of backups by sequence.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  backupFileName,
  backupStamp,
  type BackupFile,
  lsnValue,
  newestFirst,
  parseBackupName,
  provableBackups,
  sidecarsOf,
  stampAfter,
  tempFileName,
  tempFileOwner,
} from '../lib/store/backup-files.ts';
import type { BackupFormat } from '../lib/dump/pg-dump.ts';

const formats: BackupFormat[] = ['plain', 'gzip', 'custom'];

const stamps = suite('backup stamps');

stamps('a stamp is the local time, every field two digits wide', () => {
  assert.is(backupStamp(new Date(2026, 0, 2, 3, 4, 5)), '20260102_030405');
  assert.is(backupStamp(new Date(2025, 11, 31, 23, 59, 59)), '20251231_235959');
  assert.is(backupStamp(new Date(2024, 1, 29, 0, 0, 0)), '20240229_000000');
});

stamps('stampAfter counts seconds across minutes, hours, days, months, years and a leap day', () => {
  assert.is(stampAfter('20260102_030405', 0), '20260102_030405');
  assert.is(stampAfter('20260102_030459', 1), '20260102_030500');
  assert.is(stampAfter('20260102_035959', 1), '20260102_040000');
  assert.is(stampAfter('20260131_235959', 1), '20260201_000000');
  assert.is(stampAfter('20251231_235959', 1), '20260101_000000');
  assert.is(stampAfter('20240228_235959', 1), '20240229_000000');
  assert.is(stampAfter('20260102_030405', 60), '20260102_030505');
});

stamps('stampAfter refuses what is not a stamp', () => {
  for (const bad of [
    '',
    '20260102-030405',
    '2026010_030405',
    '20260102_030405.sql',
    'planetarion_backup_20260102_030405',
  ])
    assert.throws(() => stampAfter(bad, 1), /not a stamp/, JSON.stringify(bad));
});

stamps.run();

const names = suite('backup names');

names('each format has its extension; .age is appended when encrypted', () => {
  const at = new Date(2026, 0, 2, 3, 4, 5);
  assert.is(backupFileName(at, 'plain'), 'planetarion_backup_20260102_030405.sql');
  assert.is(backupFileName(at, 'gzip'), 'planetarion_backup_20260102_030405.sql.gz');
  assert.is(backupFileName(at, 'custom'), 'planetarion_backup_20260102_030405.dump');
  assert.is(backupFileName(at, 'gzip', true), 'planetarion_backup_20260102_030405.sql.gz.age');
  assert.is(backupFileName(at, 'custom', true), 'planetarion_backup_20260102_030405.dump.age');
});

names('every name backupFileName gives parses back to its format, encryption, stamp and time', () => {
  const at = new Date(2026, 6, 14, 21, 30, 9);
  for (const format of formats) {
    for (const encrypted of [false, true]) {
      const name = backupFileName(at, format, encrypted);
      const parsed = parseBackupName(name, '/share/backups')!;
      assert.ok(parsed, name);
      assert.is(parsed.name, name);
      assert.is(parsed.path, `/share/backups/${name}`);
      assert.is(parsed.format, format, name);
      assert.is(parsed.encrypted, encrypted, name);
      assert.is(parsed.stamp, '20260714_213009');
      assert.is(parsed.time.getTime(), at.getTime());
      assert.is(parsed.created.getTime(), at.getTime(), 'created: the time in the name until a manifest says more');
      assert.is(parsed.origin, 'tool');
      assert.is(parsed.sequence, undefined);
      assert.is(parsed.wal, undefined);
    }
  }
});

names('anything that is not exactly a backup name is not one (never touched by rotation)', () => {
  for (const name of [
    'planetarion_backup_20260102_030405.sql.json',
    'planetarion_backup_20260102_030405.sql.gz.sha256',
    'planetarion_backup_20260102_030405.sql.gz.age.json',
    '.planetarion_backup_20260102_030405.sql.gz.tmp-42',
    'planetarion_backup_20260102_030405.tar',
    'planetarion_backup_20260102_030405.sql.age.age',
    'planetarion_backup_20260102_0304.sql',
    'other_backup_20260102_030405.sql',
    'planetarion_backup_20260102_030405.SQL',
    'xplanetarion_backup_20260102_030405.sql',
  ])
    assert.is(parseBackupName(name), undefined, name);
});

names('a stamp that is no real local time is not a backup name', () => {
  for (const stamp of ['20260230_020000', '20261301_020000', '20260101_240000', '20260101_126000', '20260101_120060'])
    assert.is(parseBackupName(`planetarion_backup_${stamp}.sql.gz`), undefined, stamp);
});

names("the old script's hashed names are its own, plain SQL; a hash is 1 to 128 letters and digits", () => {
  const old = parseBackupName('planetarion_backup_20231201_020000_3f9a0c.sql')!;
  assert.is(old.origin, 'old-script');
  assert.is(old.format, 'plain');
  assert.is(old.encrypted, false);
  assert.is(parseBackupName(`planetarion_backup_20231201_020000_${'a'.repeat(128)}.sql`)?.origin, 'old-script');
  assert.is(parseBackupName(`planetarion_backup_20231201_020000_${'a'.repeat(129)}.sql`), undefined);
  assert.is(parseBackupName('planetarion_backup_20231201_020000_a-b.sql'), undefined);
  assert.is(parseBackupName('planetarion_backup_20231201_020000_abc.sql.age'), undefined);
});

names('only backups of this tool are provable', () => {
  const ours = parseBackupName('planetarion_backup_20260101_020000.sql.gz')!;
  const theirs = parseBackupName('planetarion_backup_20231201_020000_unavailable.sql')!;
  assert.equal(provableBackups([theirs, ours, theirs]), [ours]);
});

names.run();

const files = suite('sidecars and temp files');

files('the manifest and the checksum sit beside the backup, under its whole name', () => {
  assert.equal(sidecarsOf('/b/planetarion_backup_20260101_020000.sql.gz.age'), {
    manifest: '/b/planetarion_backup_20260101_020000.sql.gz.age.json',
    checksum: '/b/planetarion_backup_20260101_020000.sql.gz.age.sha256',
  });
});

files("a temp file is hidden, names its run's pid, and gives the pid back; its sidecars' temp files too", () => {
  const name = 'planetarion_backup_20260101_020000.sql.gz';
  assert.is(tempFileName(name, 4242), `.${name}.tmp-4242`);
  assert.is(tempFileOwner(tempFileName(name, 4242)), 4242);
  for (const sidecar of ['.json', '.sha256']) assert.is(tempFileOwner(`.${name}${sidecar}.tmp-77`), 77, sidecar);
  assert.is(tempFileOwner(`.${name}.json.tmp-77-0a1b2c`), 77, "writeFileAtomic's temp name");
  assert.is(tempFileOwner('.planetarion_backup_20260101_020000.dump.age.tmp-9'), 9);
  assert.is(tempFileOwner('.planetarion_sequence.tmp-31-ff00'), 31, "the sequence file's atomic write");
});

files('files that are not our temp files have no owner', () => {
  for (const name of [
    'planetarion_backup_20260101_020000.sql.gz',
    'planetarion_backup_20260101_020000.sql.gz.tmp-42',
    '.planetarion_backup_20260101_020000.sql.gz.tmp-',
    '.planetarion_backup_20260101_020000.tar.tmp-42',
    '.other.tmp-42',
    '.planetarion_sequence.tmp-31',
    '.planetarion_sequence',
  ])
    assert.is(tempFileOwner(name), undefined, name);
});

files.run();

const order = suite('order of backups');

/** A backup as listBackups returns it: its name and the sequence its manifest records. */
function backup(stamp: string, sequence?: number): BackupFile {
  return { ...parseBackupName(`planetarion_backup_${stamp}.sql.gz`)!, sequence };
}
const sorted = (list: BackupFile[]) => [...list].sort(newestFirst).map((b) => `${b.stamp}/${b.sequence ?? '-'}`);

order('numbered backups by sequence, then unnumbered ones by the time in their names', () => {
  assert.equal(
    sorted([
      backup('20240101_000000'),
      backup('20260101_020000', 2),
      backup('20250101_000000'),
      backup('20200101_000000', 3),
      backup('20270101_000000', 1),
    ]),
    ['20200101_000000/3', '20260101_020000/2', '20270101_000000/1', '20250101_000000/-', '20240101_000000/-'],
  );
});

order('ties are broken by the name, so the order never depends on the listing', () => {
  const a = { ...backup('20260101_020000', 5), name: 'planetarion_backup_20260101_020000.sql.gz' };
  const b = { ...backup('20260101_020000', 5), name: 'planetarion_backup_20260101_020000.sql.gz.age' };
  assert.equal([a, b].sort(newestFirst), [b, a]);
  assert.equal([b, a].sort(newestFirst), [b, a]);
});

order('an LSN X/Y reads as one number; anything else is none', () => {
  assert.is(lsnValue('0/0'), 0n);
  assert.is(lsnValue('0/16B3748'), 0x16b3748n);
  assert.is(lsnValue('1/0'), 1n << 32n);
  assert.is(lsnValue('FFFFFFFF/FFFFFFFF'), (1n << 64n) - 1n);
  assert.ok(lsnValue('1/0')! > lsnValue('0/FFFFFFFF')!, 'the high half counts first');
  for (const bad of ['', '0', '0/', '/0', '0/0/0', '123456789/0', '0/G', ' 0/0'])
    assert.is(lsnValue(bad), undefined, JSON.stringify(bad));
});

order.run();
