// The restore's verify step on real files: a backup is restored only when its bytes match its
// checksum and manifest, or, without them, when its content is a whole dump (gzip intact, pg_dump's
// trailer present). Each refusal is one line naming the file and what is wrong with it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkBackupFile, dumpFormatOf, isEncrypted, missingIdentityReason } from '../lib/store/check-file.ts';
import { resealBackup } from './helpers/restore-checks.ts';
import { suiteTempDir } from './helpers/tmp.ts';

const sql = [
  '--',
  '-- PostgreSQL database dump',
  '--',
  '\\restrict Zq3tKfSmJ2',
  'CREATE TABLE public.players (id integer, name text);',
  'COPY public.players (id, name) FROM stdin;',
  '1\tÅsa',
  '\\.',
  '\\unrestrict Zq3tKfSmJ2',
  '',
  '--',
  '-- PostgreSQL database dump complete',
  '--',
  '',
].join('\n');

const verify = suite("restore's verify: a backup file before any database is touched");
const dir = suiteTempDir(verify, { each: true });

/** Writes a backup file; with `sealed`, also its manifest and checksum, as backup-database does. */
function writeBackup(name: string, bytes: Buffer, sealed: boolean): string {
  const path = join(dir(), name);
  writeFileSync(path, bytes);
  if (sealed) {
    writeFileSync(`${path}.json`, JSON.stringify({ manifestVersion: 1, file: name }));
    resealBackup(path, bytes);
  }
  return path;
}
const check = (path: string, requireManifest = true) => checkBackupFile(path, { requireManifest });
const reasonOf = async (path: string, requireManifest = true) => {
  const r = await check(path, requireManifest);
  assert.is(r.ok, false, `${path} passed`);
  return r.ok ? '' : r.reason;
};

verify('a sealed backup is proven by its checksum alone', async () => {
  const bytes = gzipSync(Buffer.from(sql));
  const path = writeBackup('planetarion_backup_20260101_020000.sql.gz', bytes, true);
  const r = await check(path);
  assert.ok(r.ok, r.ok ? '' : r.reason);
  if (!r.ok) return;
  assert.is(r.backup.format, 'gzip');
  assert.is(r.backup.encrypted, false);
  assert.is(r.backup.size, bytes.length);
  assert.is(r.backup.sha256, r.backup.manifest?.sha256);
  assert.is(r.backup.inspection, undefined, 'no content check when the checksum proves the bytes');
});

verify('a changed byte, or a manifest naming other bytes, is refused', async () => {
  const bytes = gzipSync(Buffer.from(sql));
  const path = writeBackup('planetarion_backup_20260101_020000.sql.gz', bytes, true);
  const changed = Buffer.from(bytes);
  changed[changed.length - 5]! ^= 0xff;
  writeFileSync(path, changed);
  assert.match(await reasonOf(path), /^planetarion_backup_20260101_020000\.sql\.gz does not match its checksum/);
  resealBackup(path, changed, { sha256: 'f'.repeat(64) });
  assert.is(await reasonOf(path), "planetarion_backup_20260101_020000.sql.gz does not match its manifest's sha256");
});

verify('without sidecars: refused when a manifest is required, else proven by its content', async () => {
  const path = writeBackup('planetarion_backup_20260101_020000.sql.gz', gzipSync(Buffer.from(sql)), false);
  assert.match(
    await reasonOf(path),
    /has no manifest \(planetarion_backup_20260101_020000\.sql\.gz\.json\).*--no-verify/,
  );
  const r = await check(path, false);
  assert.ok(r.ok, r.ok ? '' : r.reason);
  if (r.ok) assert.equal([r.backup.inspection?.gzipIntact, r.backup.inspection?.complete], [true, true]);
});

verify('without sidecars: a truncated gzip stream or a dump without its trailer is refused', async () => {
  const whole = gzipSync(Buffer.from(sql));
  const cut = writeBackup('planetarion_backup_20260101_020000.sql.gz', whole.subarray(0, whole.length - 12), false);
  assert.match(
    await reasonOf(cut, false),
    /^planetarion_backup_20260101_020000\.sql\.gz is not a complete gzip stream \(/,
  );
  const untrailed = sql.slice(0, sql.indexOf('-- PostgreSQL database dump complete'));
  const plain = writeBackup('planetarion_backup_20260101_030000.sql', Buffer.from(untrailed), false);
  assert.is(
    await reasonOf(plain, false),
    "planetarion_backup_20260101_030000.sql lacks pg_dump's completion trailer: the dump is truncated",
  );
});

verify('a custom archive must start as one; a missing file, another format and no identity are named', async () => {
  const notArchive = writeBackup('planetarion_backup_20260101_020000.dump', Buffer.from(sql), true);
  assert.is(
    await reasonOf(notArchive),
    'planetarion_backup_20260101_020000.dump is not a pg_dump custom-format archive',
  );
  const archive = writeBackup('planetarion_backup_20260101_030000.dump', Buffer.from('PGDMP\x01\x0f\x00rest'), true);
  assert.ok((await check(archive)).ok);
  assert.match(await reasonOf(join(dir(), 'nothing.sql.gz')), /nothing\.sql\.gz does not exist$/);
  const other = writeBackup('planetarion_backup_20260101_020000.tar', Buffer.from('x'), true);
  assert.match(await reasonOf(other), /is not a recognised backup format/);
  const encrypted = writeBackup('planetarion_backup_20260101_020000.sql.gz.age', Buffer.from('x'), true);
  assert.is(await reasonOf(encrypted), missingIdentityReason(encrypted));
});

verify('the format is read from the name, under any .age', () => {
  assert.equal(
    ['a.sql', 'a.sql.gz', 'a.dump', 'a.sql.age', 'a.sql.gz.age', 'a.dump.age', 'a.tar', 'a.gz', 'a.age'].map((n) => [
      dumpFormatOf(n) ?? null,
      isEncrypted(n),
    ]),
    [
      ['plain', false],
      ['gzip', false],
      ['custom', false],
      ['plain', true],
      ['gzip', true],
      ['custom', true],
      [null, false],
      [null, false],
      [null, true],
    ],
  );
  assert.match(
    missingIdentityReason('/b/x.sql.gz.age'),
    /^x\.sql\.gz\.age is encrypted \(age\).*PLANETARION_AGE_IDENTITY.*--identity FILE$/,
  );
});

verify.run();
