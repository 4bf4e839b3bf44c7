// lib/age.ts and the .age names: key parsing, stream round trips, refusals; no containers needed.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import {
  AgeError,
  decryptStream,
  encryptStream,
  parseIdentities,
  parseRecipientList,
  resolveRecipients,
} from '../lib/age.ts';
import { dumpFormatOf, isEncrypted } from '../lib/store/check-file.ts';
import { backupFileName, parseBackupName, tempFileOwner, tempFileName } from '../lib/store/backup-files.ts';
import { planRotation } from '../lib/store/rotate.ts';
import { resolveSettings } from '../lib/settings.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const age = suite('age');

async function* chunks(bytes: Uint8Array, size = 10_000): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of source) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

age('recipient lists: comma, space and newline separated, comments, duplicates; bad keys named', async () => {
  const a = await identityToRecipient(await generateX25519Identity());
  const b = await identityToRecipient(await generateX25519Identity());
  assert.equal(parseRecipientList(`${a},${b}`), [a, b]);
  assert.equal(parseRecipientList(`${a} ${b} ${a}`), [a, b]);
  assert.equal(parseRecipientList(`# ops\n${a}\n\n${b} # spare\n`), [a, b]);
  assert.throws(() => parseRecipientList('age1nope'), /not an age public key/);
  assert.throws(() => parseRecipientList('# nothing'), /no age public key/);
  const dir = makeTempDir();
  try {
    writeFileSync(join(dir, 'r.txt'), `${a}\n`);
    assert.equal(resolveRecipients(join(dir, 'r.txt')), [a]);
    assert.throws(() => resolveRecipients(join(dir, 'missing.txt')), /cannot be read/);
  } finally {
    removeTempDir(dir);
  }
});

age(
  'settings: PLANETARION_AGE_RECIPIENTS checked at resolve time (exit 2), a file path kept; --identity resolved',
  async () => {
    const a = await identityToRecipient(await generateX25519Identity());
    const none = () => undefined;
    assert.is(resolveSettings({ env: { PLANETARION_AGE_RECIPIENTS: a }, readFile: none }).ageRecipients, a);
    assert.is(
      resolveSettings({ env: { PLANETARION_AGE_RECIPIENTS: '/etc/keys.txt' }, readFile: none }).ageRecipients,
      '/etc/keys.txt',
    );
    assert.throws(
      () => resolveSettings({ env: { PLANETARION_AGE_RECIPIENTS: 'ssh-ed25519 AAAA' }, readFile: none }),
      /PLANETARION_AGE_RECIPIENTS/,
    );
    assert.is(
      resolveSettings({ flags: { identity: '/keys/me.txt' }, env: {}, readFile: none }).ageIdentity,
      '/keys/me.txt',
    );
    assert.is(resolveSettings({ env: {}, readFile: none }).ageIdentity, undefined);
  },
);

age('identities: age-keygen files parse; a bad line is refused without being echoed', () => {
  const dir = makeTempDir();
  try {
    execFileSync('age-keygen', ['-o', join(dir, 'k.txt')], { stdio: 'ignore' });
    const text = readFileSync(join(dir, 'k.txt'), 'utf8');
    const keys = parseIdentities(text);
    assert.is(keys.length, 1);
    assert.match(keys[0]!, /^AGE-SECRET-KEY-1/);
    const typo = `${keys[0]!.slice(0, -1)}b`;
    try {
      parseIdentities(typo);
      assert.unreachable();
    } catch (error) {
      assert.not.ok((error as Error).message.includes(typo.slice(20)), 'the key is not echoed');
    }
  } finally {
    removeTempDir(dir);
  }
});

age('streams round-trip across chunk boundaries; wrong key, truncated and tampered fail with AgeError', async () => {
  const identity = await generateX25519Identity();
  const other = await generateX25519Identity();
  const plain = Buffer.alloc(300_000);
  for (let i = 0; i < plain.length; i++) plain[i] = (i * 7919) % 251;
  const cipher = await collect(encryptStream(chunks(plain, 7777), [await identityToRecipient(identity)]));
  assert.equal(await collect(decryptStream(chunks(cipher, 5000), [identity])), plain);
  const fails = async (bytes: Buffer, keys: string[], pattern: RegExp) => {
    try {
      await collect(decryptStream(chunks(bytes), keys));
      assert.unreachable('decrypted');
    } catch (error) {
      assert.instance(error, AgeError);
      assert.match((error as Error).message, pattern);
    }
  };
  await fails(cipher, [other], /wrong key/);
  await fails(cipher.subarray(0, cipher.length - 1000), [identity], /truncated or was tampered/);
  const tampered = Buffer.from(cipher);
  tampered[200_000]! ^= 1;
  await fails(tampered, [identity], /truncated or was tampered/);
  await fails(Buffer.from('-- not age\n'), [identity], /not an age file/);
});

age('names: .age belongs to the same rotation series; temp files of .age runs are recognised', () => {
  const when = new Date(2026, 0, 2, 3, 4, 5);
  const name = backupFileName(when, 'gzip', true);
  assert.is(name, 'planetarion_backup_20260102_030405.sql.gz.age');
  assert.is(backupFileName(when, 'plain', true), 'planetarion_backup_20260102_030405.sql.age');
  assert.is(backupFileName(when, 'custom', true), 'planetarion_backup_20260102_030405.dump.age');
  const parsed = parseBackupName(name, '/b')!;
  assert.is(parsed.format, 'gzip');
  assert.is(parsed.encrypted, true);
  assert.is(parseBackupName('planetarion_backup_20260102_030405.sql.gz')!.encrypted, false);
  assert.is(parseBackupName('planetarion_backup_20260102_030405.sql.gz.age.bak'), undefined);
  assert.is(tempFileOwner(tempFileName(name, 4242)), 4242);
  assert.is(dumpFormatOf('/x/planetarion_backup_20260102_030405.dump.age'), 'custom');
  assert.ok(isEncrypted(name));
  const series = [
    'planetarion_backup_20260101_000000.sql.gz',
    'planetarion_backup_20260102_000000.sql.gz.age',
    'planetarion_backup_20260103_000000.sql.gz.age',
  ].map((n) => parseBackupName(n, '/b')!);
  assert.equal(
    planRotation(series, 2, series[2]!.name).map((b) => b.name),
    ['planetarion_backup_20260101_000000.sql.gz'],
  );
});

age.run();
