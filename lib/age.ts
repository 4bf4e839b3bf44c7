// age encryption of backups at rest (the `age-encryption` package, the age v1 format, so
// Debian's `age` CLI reads what this writes and the other way round). Only public keys live on
// the NAS; the identity (secret key) is read where a restore needs it and never written there.
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { UsageError } from './errors.ts';

/** The suffix an encrypted backup carries after its format's extension (`.sql.gz.age`). */
export const ageSuffix = '.age';

/**
 * The age library, loaded on first use: its curve setup costs every start that loads it, and most
 * runs (unencrypted backups, --help, settings checks) never encrypt or decrypt anything.
 */
const ageLibrary = () => import('age-encryption');

const recipientPattern = /^age1[02-9ac-hj-np-z]{58}$/;
const identityPattern = /^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/;

/** age public keys in a text: comma, space or newline separated, `#` comments ignored. */
export function parseRecipientList(text: string): string[] {
  const keys = text
    .split('\n')
    .map((line) => line.replace(/#.*$/, ''))
    .join(' ')
    .split(/[\s,]+/)
    .filter(Boolean);
  const bad = keys.find((key) => !recipientPattern.test(key));
  if (bad)
    throw new Error(
      `'${bad.slice(0, 24)}${bad.length > 24 ? '...' : ''}' is not an age public key (age1 followed by 58 bech32 characters, as age-keygen prints)`,
    );
  if (keys.length === 0) throw new Error('no age public key found');
  return [...new Set(keys)];
}

/**
 * The recipients of PLANETARION_AGE_RECIPIENTS: the keys themselves, or (an absolute path) a
 * file of them, one per line. Read when a backup starts, so an edited file applies to the next run.
 */
export function resolveRecipients(
  setting: string,
  readFile: (path: string) => string = (p) => readFileSync(p, 'utf8'),
): string[] {
  if (!isAbsolute(setting)) return parseRecipientList(setting);
  let text: string;
  try {
    text = readFile(setting);
  } catch (error) {
    throw new UsageError(
      `PLANETARION_AGE_RECIPIENTS file '${setting}' cannot be read: ${(error as Error).message}`,
      'Point it at a file of age public keys (age1...), one per line, or give the keys themselves.',
    );
  }
  try {
    return parseRecipientList(text);
  } catch (error) {
    throw new UsageError(
      `PLANETARION_AGE_RECIPIENTS file '${setting}': ${(error as Error).message}`,
      'Put one age public key (age1...) per line; # starts a comment.',
    );
  }
}

/** The secret keys in an identity file's text (age-keygen's format: comments, one key per line). */
export function parseIdentities(text: string): string[] {
  const keys = text
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter(Boolean);
  // Never echo a line of it: it may be a secret key with a typo.
  const badLine = keys.findIndex((key) => !identityPattern.test(key));
  if (badLine >= 0)
    throw new Error(`key ${badLine + 1} is not an age secret key (AGE-SECRET-KEY-1..., as age-keygen writes)`);
  if (keys.length === 0) throw new Error('no age secret key (AGE-SECRET-KEY-1...) found');
  return keys;
}

/** Reads an identity file (--identity / PLANETARION_AGE_IDENTITY); a bad one is a usage error (exit 2). */
export function readIdentityFile(path: string, origin = 'PLANETARION_AGE_IDENTITY'): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new UsageError(
      `${origin} '${path}' cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      'Point it at the age identity file made by age-keygen (AGE-SECRET-KEY-1...).',
    );
  }
  try {
    return parseIdentities(text);
  } catch (error) {
    throw new UsageError(
      `${origin} '${path}': ${(error as Error).message}`,
      'Point it at the age identity file made by age-keygen.',
    );
  }
}

/** A web ReadableStream that pulls from an async iterable: one chunk at a time, no buffering. */
function toWebStream(source: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const next = await iterator.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      async cancel(reason) {
        await iterator.return?.(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

async function* fromWebStream(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    // Stopping early (an error downstream) cancels the source too, so nothing keeps reading.
    await reader.cancel().catch(() => {});
  }
}

/** Encrypts a byte stream to the recipients as it flows (64 KiB age chunks; memory stays flat). */
export async function* encryptStream(
  source: AsyncIterable<Uint8Array>,
  recipients: string[],
): AsyncGenerator<Uint8Array> {
  const { Encrypter } = await ageLibrary();
  const encrypter = new Encrypter();
  for (const recipient of recipients) encrypter.addRecipient(recipient);
  yield* fromWebStream(await encrypter.encrypt(toWebStream(source)));
}

/**
 * Decrypts an age stream as it flows. The header is read and the file key unwrapped before the
 * first byte comes out, so a wrong identity fails at once; every 64 KiB chunk is authenticated
 * before it is passed on, and a truncated or tampered file fails at the chunk where it breaks.
 */
export async function* decryptStream(
  source: AsyncIterable<Uint8Array>,
  identities: string[],
): AsyncGenerator<Uint8Array> {
  const { Decrypter } = await ageLibrary();
  const decrypter = new Decrypter();
  for (const identity of identities) decrypter.addIdentity(identity);
  let plaintext: ReadableStream<Uint8Array>;
  try {
    plaintext = await decrypter.decrypt(toWebStream(source));
  } catch (error) {
    throw new AgeError(describeAgeError(error, true));
  }
  try {
    yield* fromWebStream(plaintext);
  } catch (error) {
    throw new AgeError(describeAgeError(error, false));
  }
}

/** A file that does not decrypt: wrong identity, not age, truncated or tampered. */
export class AgeError extends Error {}

/** What a decryption failure means, in words a person can act on. */
function describeAgeError(error: unknown, header: boolean): string {
  const message = error instanceof Error ? error.message : String(error);
  if (header) {
    if (/no identity matched/i.test(message)) return 'it was not encrypted to the given identity (wrong key)';
    return `its age header is invalid (${message}): not an age file, or damaged`;
  }
  return `decryption failed (${message}): the file is truncated or was tampered with`;
}
