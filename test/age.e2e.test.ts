// age encryption end to end: the built executables, real PostgreSQL containers and Debian's
// `age` CLI (format interoperability both ways), refusals before any database is touched, and no
// plaintext on disk while a backup runs.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, startTool } from './helpers/cli.ts';
import { psql, removeDb, scratchName, seedPlanetarion, startDb } from './helpers/db.ts';
import { backupInto, databases, marker, resealBackup, setMarker } from './helpers/restore-checks.ts';
import { TempDirs } from './helpers/tmp.ts';

const src = scratchName('pb-age-src');
const other = scratchName('pb-age-other');
const temp = new TempDirs('planetarion-age-');
let ready = false;
let keyFile = '';
let wrongKeyFile = '';
let recipient = '';
let wrongRecipient = '';
/** A row's text that must never appear on disk in clear. */
const secret = 'age-secret-row-7f3Kq9XwZ';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Rewrites a backup's .sha256 and manifest to match its current bytes (what only decryption can catch). */
const rechecksum = (path: string) => resealBackup(path, readFileSync(path), { file: basename(path) });

const age = suite('age encryption');

age('setup: age keys and a seeded database with a known row', async () => {
  const keys = temp.make('planetarion-age-keys-');
  keyFile = join(keys, 'key.txt');
  wrongKeyFile = join(keys, 'wrong.txt');
  execFileSync('age-keygen', ['-o', keyFile], { stdio: 'ignore' });
  execFileSync('age-keygen', ['-o', wrongKeyFile], { stdio: 'ignore' });
  recipient = execFileSync('age-keygen', ['-y', keyFile], { encoding: 'utf8' }).trim();
  wrongRecipient = execFileSync('age-keygen', ['-y', wrongKeyFile], { encoding: 'utf8' }).trim();
  await Promise.all([startDb(src), startDb(other)]);
  await seedPlanetarion(src, { scale: 1 });
  await psql(src, `INSERT INTO chat_messages (channel, body, sent_at) VALUES ('#secret', '${secret}', now())`);
  ready = true;
});

age(
  'an encrypted backup: .sql.gz.age, manifest with recipients, sha256 of the ciphertext; age -d decrypts it to a dump that restores',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    const file = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient });
    assert.match(file, /^planetarion_backup_\d{8}_\d{6}\.sql\.gz\.age$/);
    const path = join(dir, 'backups', file);
    const bytes = readFileSync(path);
    assert.ok(bytes.subarray(0, 21).toString('latin1').startsWith('age-encryption.org/v1'), 'an age v1 file');
    assert.not.ok(bytes.includes(secret), 'the known row is not in the file in clear');
    const manifest = JSON.parse(readFileSync(`${path}.json`, 'utf8'));
    assert.equal(manifest.encryption.recipients, [recipient]);
    assert.is(manifest.encryption.scheme, 'age');
    assert.is(manifest.sha256, sha256(bytes));
    assert.is(manifest.size, bytes.length);
    assert.ok(manifest.fingerprint?.sha256, 'fingerprint taken in the snapshot');
    assert.is(readFileSync(`${path}.sha256`, 'utf8'), `${sha256(bytes)}  ${file}\n`);
    execFileSync('sha256sum', ['-c', `${file}.sha256`], { cwd: join(dir, 'backups'), stdio: 'ignore' }); // integrity without the key

    // Debian's age CLI reads what the tool wrote; the dump inside restores by hand.
    const gz = execFileSync('age', ['-d', '-i', keyFile, path], { maxBuffer: 256 << 20 });
    const sql = gunzipSync(gz).toString('utf8');
    assert.ok(sql.includes('-- PostgreSQL database dump complete'));
    assert.ok(sql.includes(secret), 'the decrypted dump holds the known row');
    await psql(other, 'DROP DATABASE IF EXISTS byhand; CREATE DATABASE byhand TEMPLATE template0;', { db: 'postgres' });
    await psql(other, sql.replace(/^\\(un)?restrict .*$/gm, ''), { db: 'byhand' });
    assert.is(await psql(other, `SELECT count(*) FROM chat_messages WHERE body = '${secret}'`, { db: 'byhand' }), '1');

    // --status says which backups are encrypted.
    const status = await runTool('backup-database', ['--status'], { PLANETARION_DIR: dir });
    assert.is(status.code, 0, status.stderr);
    assert.match(
      status.stdout,
      new RegExp(`${file.replace(/\./g, '\\.')}.*checksum ok, encrypted \\(age, 1 recipient\\)`),
    );
    const statusJson = JSON.parse(
      (await runTool('backup-database', ['--status', '--json'], { PLANETARION_DIR: dir })).stdout,
    );
    assert.is(statusJson.backups[0].encrypted, true);
    assert.equal(statusJson.backups[0].recipients, [recipient]);
  },
);

age(
  'restore needs the identity: without it exit 2 naming the setting, no database touched; with it the fingerprint is proven',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    await setMarker(src, 'enc-1');
    const file = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient });
    await setMarker(src, 'after-enc-1');
    const before = await databases(src);
    const missing = await runTool('restore-database', ['latest', '--yes'], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: src,
    });
    assert.is(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /PLANETARION_AGE_IDENTITY/);
    assert.match(missing.stderr, /--identity/);
    assert.equal(await databases(src), before);
    assert.is(await marker(src), 'after-enc-1');

    const ok = await runTool('restore-database', ['latest', '--yes', '--json', '--identity', keyFile], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: src,
    });
    assert.is(ok.code, 0, ok.stderr);
    const expected = JSON.parse(readFileSync(join(dir, 'backups', `${file}.json`), 'utf8')).fingerprint.sha256;
    assert.is(JSON.parse(ok.stdout).winner.fingerprint, expected);
    assert.is(await marker(src), 'enc-1');

    // The environment works as well as the flag (the restore drill: nothing swapped).
    const drill = await runTool('restore-database', ['--test', 'latest', '--json'], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: src,
      PLANETARION_AGE_IDENTITY: keyFile,
    });
    assert.is(drill.code, 0, drill.stderr);
  },
);

age('a file encrypted by the age CLI for the same recipient restores with the tool', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  await setMarker(src, 'cli-encrypted');
  const plainName = await backupInto(dir, src);
  await setMarker(src, 'after-cli');
  const plainPath = join(dir, 'backups', plainName);
  const encPath = `${plainPath}.age`;
  execFileSync('age', ['-r', recipient, '-o', encPath, plainPath]);
  const manifest = JSON.parse(readFileSync(`${plainPath}.json`, 'utf8'));
  writeFileSync(
    `${encPath}.json`,
    JSON.stringify({ ...manifest, encryption: { scheme: 'age', recipients: [recipient], dumpBytes: manifest.size } }),
  );
  rechecksum(encPath);
  const r = await runTool('restore-database', [`${plainName}.age`, '--yes', '--json', '--identity', keyFile], {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: src,
  });
  assert.is(r.code, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).winner.fingerprint, manifest.fingerprint.sha256);
  assert.is(await marker(src), 'cli-encrypted');
});

age(
  'wrong identity, truncated and tampered .age files are refused before any database is touched; the fallback moves on',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = temp.make();
    await setMarker(src, 'good-old');
    const good = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient });
    await setMarker(src, 'bad-newer');
    // Newer files, each broken in one way (the chain tries them newest first).
    const wrong = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: wrongRecipient });
    const truncatedStale = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient });
    const truncated = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient });
    const tampered = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: recipient });
    const path = (name: string) => join(dir, 'backups', name);
    const size = statSync(path(truncated)).size;
    truncateSync(path(truncatedStale), Math.floor(size / 2)); // checksum left stale
    truncateSync(path(truncated), size - 100);
    rechecksum(path(truncated)); // checksum rewritten: only decryption can tell
    const bytes = readFileSync(path(tampered));
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(path(tampered), bytes);
    rechecksum(path(tampered));
    await setMarker(src, 'live-before-restore');
    const before = await databases(src);

    const r = await runTool('restore-database', ['latest', '--fallback', '--yes', '--json', '--identity', keyFile], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: src,
    });
    assert.is(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    const attempts = result.attempts as Array<{ file: string; ok: boolean; reason: string; touchedDatabase: boolean }>;
    assert.equal(
      attempts.map((a) => a.file.split('/').pop()),
      [tampered, truncated, truncatedStale, wrong, good],
    );
    const [tamperedAttempt, truncatedAttempt, staleAttempt, wrongAttempt] = attempts;
    assert.match(tamperedAttempt!.reason, /cannot be decrypted: decryption failed .*truncated or was tampered with/);
    assert.match(truncatedAttempt!.reason, /cannot be decrypted: decryption failed .*truncated or was tampered with/);
    assert.match(staleAttempt!.reason, /does not match its checksum/);
    assert.match(wrongAttempt!.reason, /cannot be decrypted: it was not encrypted to the given identity \(wrong key\)/);
    for (const attempt of attempts.slice(0, 4))
      assert.is(attempt.touchedDatabase, false, `${attempt.file} touched a database`);
    assert.ok(attempts[4]!.ok);
    assert.is(await marker(src), 'good-old');
    // No scratch database was left by the refused files; the replaced live one is kept for rollback.
    const after = await databases(src);
    assert.equal(
      after.filter((d) => !before.includes(d) && !/_previous_/.test(d)),
      [],
    );
  },
);

age(
  'no plaintext on disk: while an encrypted backup streams, no file under the backup dir holds a known row',
  async () => {
    assert.ok(ready, 'setup failed');
    // Plain SQL (no gzip), so a clear byte of the dump anywhere on disk would show the row's text.
    const dir = temp.make();
    await psql(other, 'DROP DATABASE IF EXISTS planetarion WITH (FORCE); CREATE DATABASE planetarion;', {
      db: 'postgres',
    });
    await seedPlanetarion(other, { scale: 20 });
    await psql(other, `INSERT INTO chat_messages (channel, body, sent_at) VALUES ('#secret', '${secret}', now())`);
    const env = { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: other, PLANETARION_COMPRESS: 'none' };

    // Control: the same poll finds the row in an unencrypted run (so the check can see it).
    const scan = (backups: string) => {
      let sawTemp = false;
      let leaked: string | undefined;
      let names: string[] = [];
      try {
        names = readdirSync(backups);
      } catch {
        return { sawTemp, leaked };
      }
      for (const name of names) {
        if (name.includes('.tmp-')) sawTemp = true;
        try {
          if (readFileSync(join(backups, name)).includes(secret)) leaked = name;
        } catch {
          // renamed or removed between the listing and the read
        }
      }
      return { sawTemp, leaked };
    };
    const watch = async (extra: Record<string, string>) => {
      const run = startTool('backup-database', ['--json', '--keep', '10'], { ...env, ...extra });
      let done = false;
      void run.done.then(() => (done = true));
      let sawTemp = false;
      let leaked: string | undefined;
      while (!done) {
        const found = scan(join(dir, 'backups'));
        sawTemp ||= found.sawTemp;
        leaked ??= found.leaked;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const result = await run.done;
      assert.is(result.code, 0, result.stderr);
      leaked ??= scan(join(dir, 'backups')).leaked;
      await new Promise((resolve) => setTimeout(resolve, 1100));
      return { sawTemp, leaked, file: JSON.parse(result.stdout).file as string };
    };
    const clear = await watch({});
    assert.ok(clear.leaked, 'control: an unencrypted plain backup holds the row (the scan works)');
    execFileSync('rm', ['-f', ...readdirSync(join(dir, 'backups')).map((n) => join(dir, 'backups', n))]);

    const encrypted = await watch({ PLANETARION_AGE_RECIPIENTS: recipient });
    assert.match(encrypted.file, /\.sql\.age$/);
    assert.ok(encrypted.sawTemp, 'the poll saw the temp file while the backup streamed');
    assert.is(encrypted.leaked, undefined, `plaintext found in ${encrypted.leaked}`);
    // And the final file decrypts to the dump with the row.
    const sql = execFileSync('age', ['-d', '-i', keyFile, join(dir, 'backups', encrypted.file)], {
      maxBuffer: 1 << 30,
    });
    assert.ok(sql.includes(secret));
  },
);

age('plain SQL (.sql.age) and custom-format (.dump.age) backups encrypt and restore too', async () => {
  assert.ok(ready, 'setup failed');
  for (const [extra, suffix] of [
    [{ PLANETARION_COMPRESS: 'none' }, '.sql.age'],
    [{ PLANETARION_FORMAT: 'custom' }, '.dump.age'],
  ] as const) {
    const dir = temp.make();
    await setMarker(src, `format${suffix}`);
    const file = await backupInto(dir, src, { ...extra, PLANETARION_AGE_RECIPIENTS: recipient });
    assert.ok(file.endsWith(suffix), file);
    await setMarker(src, 'after-format');
    const r = await runTool('restore-database', ['latest', '--yes', '--json', '--identity', keyFile], {
      PLANETARION_DIR: dir,
      PLANETARION_DB_CONTAINER: src,
    });
    assert.is(r.code, 0, r.stderr);
    assert.is(await marker(src), `format${suffix}`);
  }
});

age('a recipients file (comments, several keys) works; a bad key is refused with exit 2', async () => {
  assert.ok(ready, 'setup failed');
  const dir = temp.make();
  const list = join(dir, 'recipients.txt');
  writeFileSync(list, `# operators\n${recipient}\n\n${wrongRecipient} # spare\n`);
  const file = await backupInto(dir, src, { PLANETARION_AGE_RECIPIENTS: list });
  const manifest = JSON.parse(readFileSync(join(dir, 'backups', `${file}.json`), 'utf8'));
  assert.equal(manifest.encryption.recipients, [recipient, wrongRecipient]);
  // Either identity decrypts it.
  for (const key of [keyFile, wrongKeyFile])
    execFileSync('age', ['-d', '-i', key, '-o', '/dev/null', join(dir, 'backups', file)]);
  const bad = await runTool('backup-database', [], {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: src,
    PLANETARION_AGE_RECIPIENTS: 'age1nope',
  });
  assert.is(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /PLANETARION_AGE_RECIPIENTS/);
});

age.after(async () => {
  await Promise.all([removeDb(src), removeDb(other)]);
  temp.removeAll();
});

age.run();
