// The off-site pieces that are pure: settings, credentials files, the remote naming pattern,
// off-site rotation's plan, and the ETags an upload must be confirmed with.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OffsiteStore, partSize } from '../lib/offsite/client.ts';
import { offsiteConfig, offsiteCronWarnings, parseCredentialsFile, resolveCredentials } from '../lib/offsite/config.ts';
import { backupNameOf, planRemoteRotation, remoteBackups } from '../lib/offsite/remote.ts';
import { localFacts, UploadHasher, uploadBackup } from '../lib/offsite/upload.ts';
import { resolveSettings } from '../lib/settings.ts';
import { FaultProxy, type RequestInfo, s3Credentials, startS3, type TestS3 } from './helpers/s3.ts';
import { suiteTempDir } from './helpers/tmp.ts';

const settingsOf = (env: Record<string, string>) => resolveSettings({ env, readFile: () => undefined });

const config = suite('off-site settings');
config('s3://bucket/prefix, defaults: us-east-1, path style only with an endpoint, the local keep', () => {
  const aws = offsiteConfig(settingsOf({ PLANETARION_OFFSITE: 's3://my-bucket/nas/backups/', PLANETARION_KEEP: '5' }))!;
  assert.equal(
    [aws.bucket, aws.prefix, aws.region, aws.pathStyle, aws.keep, aws.endpoint, aws.timeoutMs],
    ['my-bucket', 'nas/backups/', 'us-east-1', false, 5, undefined, 60_000],
  );
  const minio = offsiteConfig(
    settingsOf({
      PLANETARION_OFFSITE: 's3://bk1',
      PLANETARION_S3_ENDPOINT: 'http://127.0.0.1:9000/',
      PLANETARION_OFFSITE_KEEP: '14',
    }),
  )!;
  assert.equal([minio.prefix, minio.pathStyle, minio.keep, minio.endpoint], ['', true, 14, 'http://127.0.0.1:9000']);
  assert.is(
    offsiteConfig(
      settingsOf({
        PLANETARION_OFFSITE: 's3://bk1',
        PLANETARION_S3_ENDPOINT: 'https://x.example',
        PLANETARION_S3_PATH_STYLE: 'off',
      }),
    )!.pathStyle,
    false,
  );
  assert.is(offsiteConfig(settingsOf({})), undefined);
});
config('bad values are refused naming the setting', () => {
  for (const bad of ['http://b/x', 's3://', 's3://Bk/x', 's3://b/a//c', 's3://bucket//x', 's3://-b/x']) {
    assert.throws(() => settingsOf({ PLANETARION_OFFSITE: bad }), /PLANETARION_OFFSITE/, bad);
  }
});
config('credentials: the environment first, else the profile of the credentials file; a clear error otherwise', () => {
  const c = offsiteConfig(
    settingsOf({ PLANETARION_OFFSITE: 's3://bk1', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/creds' }),
  )!;
  assert.equal(resolveCredentials(c, { AWS_ACCESS_KEY_ID: 'id', AWS_SECRET_ACCESS_KEY: 'secret' }), {
    accessKeyId: 'id',
    secretAccessKey: 'secret',
    sessionToken: undefined,
    source: 'the environment',
  });
  assert.throws(
    () => resolveCredentials(c, { AWS_ACCESS_KEY_ID: 'id' }),
    /only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/,
  );
  assert.throws(() => resolveCredentials(c, {}), /the credentials file \/nonexistent\/creds does not exist/);
  const text =
    '# keys\n[other]\naws_access_key_id = A\naws_secret_access_key = B\n\n[profile nas]\nAWS_ACCESS_KEY_ID=C\naws_secret_access_key = D E\n';
  assert.equal(Object.fromEntries(parseCredentialsFile(text, 'nas')!), {
    aws_access_key_id: 'C',
    aws_secret_access_key: 'D E',
  });
  assert.is(parseCredentialsFile(text, 'default'), undefined);
});
config('setup-backup-cron warns about an unencrypted off-site copy and keys only in the shell', () => {
  const s = settingsOf({ PLANETARION_OFFSITE: 's3://bk1' });
  const warnings = offsiteCronWarnings(s, { AWS_ACCESS_KEY_ID: 'id' });
  assert.is(warnings.length, 2);
  assert.match(warnings[0]!, /will not be encrypted/);
  assert.match(warnings[1]!, /AWS_SHARED_CREDENTIALS_FILE/);
  assert.equal(offsiteCronWarnings(settingsOf({}), { AWS_ACCESS_KEY_ID: 'id' }), []);
});
config.run();

const remote = suite('remote backups and off-site rotation');
const names = (n: number, hour0 = 0) =>
  Array.from({ length: n }, (_, i) => `planetarion_backup_20250101_${String(hour0 + i).padStart(2, '0')}0000.sql.gz`);
const complete = (name: string) => [name, `${name}.json`, `${name}.sha256`].map((n) => ({ name: n, size: 10 }));
remote('only the backup pattern and its sidecars belong to us', () => {
  assert.is(
    backupNameOf('planetarion_backup_20250101_000000.sql.gz.json'),
    'planetarion_backup_20250101_000000.sql.gz',
  );
  assert.is(
    backupNameOf('planetarion_backup_20250101_000000.dump.age.sha256'),
    'planetarion_backup_20250101_000000.dump.age',
  );
  for (const other of [
    'notes.txt',
    'planetarion_backup_20250101_000000.sql.gz.bak',
    'planetarion_backup_2025.sql.gz',
    'x/planetarion_backup_20250101_000000.sql.gz',
  ])
    assert.is(backupNameOf(other), undefined, other);
  const { backups, foreign } = remoteBackups([...complete(names(1)[0]!), { name: 'notes.txt', size: 1 }]);
  assert.is(foreign, 1);
  assert.equal(
    backups.map((b) => [b.name, b.hasManifest, b.hasChecksum, b.size]),
    [[names(1)[0], true, true, 10]],
  );
});
remote(
  'keeps the newest N complete copies; older ones and older incomplete leftovers go; never the protected one',
  () => {
    const all = names(5);
    const objects = [
      ...complete(all[0]!),
      { name: all[1]!, size: 10 },
      ...complete(all[2]!),
      ...complete(all[3]!),
      ...complete(all[4]!),
    ];
    const { backups } = remoteBackups(objects);
    assert.equal(
      planRemoteRotation(backups, 2, all[4]!).map((b) => b.name),
      [all[2], all[1], all[0]],
    );
    // An incomplete copy newer than the Nth complete one is kept (the next run completes it).
    const withPartial = remoteBackups([
      ...complete(all[0]!),
      { name: all[3]!, size: 10 },
      ...complete(all[2]!),
      ...complete(all[4]!),
    ]).backups;
    assert.equal(
      planRemoteRotation(withPartial, 2, all[4]!).map((b) => b.name),
      [all[0]],
    );
    assert.equal(
      planRemoteRotation(backups, 1, all[0]!).map((b) => b.name),
      [all[3], all[2], all[1]],
    );
  },
);
remote.run();

const hasher = suite('UploadHasher');
const md5 = (b: Buffer) => createHash('md5').update(b).digest();
/** Bytes that differ from part to part, so a part hashed at the wrong offset shows. */
const sample = (size: number) => {
  const data = Buffer.alloc(size, 7);
  for (let i = 0; i < size; i += 4099) data[i] = i & 0xff;
  return data;
};
async function etagsOf(data: Buffer, partLength = partSize): Promise<{ etags: string[]; sha256: string }> {
  const h = new UploadHasher(data.length, partLength);
  // Odd chunk sizes: part boundaries fall inside chunks.
  const chunks = Array.from({ length: Math.ceil(data.length / 65_521) }, (_, i) =>
    data.subarray(i * 65_521, (i + 1) * 65_521),
  );
  for (const chunk of chunks) h.update(chunk);
  return { etags: h.expectedEtags(), sha256: h.sha256.digest('hex') };
}
hasher(
  'the ETag S3 gives a single PUT (one part: its MD5) and a multipart upload (md5 of the part MD5s-N)',
  async () => {
    for (const size of [0, 1000, partSize, partSize + 1, partSize * 2 + 12345]) {
      const data = sample(size);
      const parts = Array.from({ length: Math.ceil(size / partSize) }, (_, i) =>
        md5(data.subarray(i * partSize, (i + 1) * partSize)),
      );
      const expected =
        size <= partSize
          ? [md5(data).toString('hex')]
          : // s3rver (and servers like it) give a multipart object the whole file's MD5 instead.
            [`${md5(Buffer.concat(parts)).toString('hex')}-${parts.length}`, md5(data).toString('hex')];
      const { etags, sha256 } = await etagsOf(data);
      assert.equal(etags, expected, String(size));
      assert.is(sha256, createHash('sha256').update(data).digest('hex'));
    }
  },
);
hasher('other bytes in any part, or other part boundaries, give other ETags', async () => {
  const data = sample(partSize * 2 + 12345);
  const { etags } = await etagsOf(data);
  for (const at of [0, partSize - 1, partSize, data.length - 1]) {
    const changed = Buffer.from(data);
    changed[at]! ^= 1;
    const other = await etagsOf(changed);
    assert.equal(
      other.etags.filter((e) => etags.includes(e)),
      [],
      `byte ${at}`,
    );
  }
  const halfParts = await etagsOf(data, partSize / 2);
  assert.is(halfParts.etags[1], etags[1], 'the whole MD5 does not depend on the parts');
  assert.is.not(halfParts.etags[0], etags[0]);
  assert.match(halfParts.etags[0]!, /-5$/);
});
hasher.run();

const upload = suite('uploadBackup against s3rver');
const dir = suiteTempDir(upload, { prefix: 'planetarion-upload-' });
let s3: TestS3;
let store: OffsiteStore;
upload.before(async () => {
  s3 = await startS3();
  const env = { PLANETARION_OFFSITE: `s3://${s3.bucket}/up`, PLANETARION_S3_ENDPOINT: s3.endpoint, ...s3Credentials };
  store = await OffsiteStore.open(offsiteConfig(settingsOf(env))!, env);
});
upload.after(async () => {
  store.close();
  await s3.stop();
});
/** A backup file with its sidecars; `checksumOf` the bytes its .sha256 should describe. */
function backupFile(name: string, data: Buffer, checksumOf = data): string {
  const path = join(dir(), name);
  writeFileSync(path, data);
  writeFileSync(`${path}.sha256`, `${createHash('sha256').update(checksumOf).digest('hex')}  ${name}\n`);
  writeFileSync(`${path}.json`, JSON.stringify({ created: '2025-01-01T00:00:00.000Z' }));
  return path;
}
upload('a single PUT and a multipart upload are confirmed by the ETag, without reading them back', async () => {
  // Six parts: more than the upload's buffers, so a reused buffer holding another part's bytes shows.
  for (const [n, size] of [
    [1, 1000],
    [2, partSize * 5 + 12345],
    [4, partSize],
  ] as const) {
    const name = `planetarion_backup_20250101_00000${n}.sql`;
    const data = sample(size);
    assert.equal(await uploadBackup(store, localFacts(backupFile(name, data))!), { confirmedBy: 'etag' }, name);
    assert.ok(s3.read(`up/${name}`).equals(data), name);
    assert.is(s3.metadata(`up/${name}`).sha256, createHash('sha256').update(data).digest('hex'));
    assert.ok(s3.keys().includes(`up/${name}.json`) && s3.keys().includes(`up/${name}.sha256`));
  }
});
upload('bytes that do not match the .sha256 are refused and their object removed', async () => {
  const name = 'planetarion_backup_20250101_000003.sql';
  const data = sample(partSize + 5);
  const other = Buffer.from(data);
  other[partSize]! ^= 1;
  try {
    await uploadBackup(store, localFacts(backupFile(name, data, other))!);
    assert.unreachable('uploaded');
  } catch (error) {
    assert.match(String(error), /does not match its \.sha256/);
  }
  assert.not.ok(s3.keys().some((k) => k.startsWith(`up/${name}`)));
});

/** A store that talks to s3rver through a FaultProxy, for one test. */
async function throughProxy(rule: (request: RequestInfo) => 'pass' | 'stall' | { status: number; code: string }) {
  const proxy = new FaultProxy(s3.port);
  await proxy.up();
  proxy.rule = rule;
  const env = {
    PLANETARION_OFFSITE: `s3://${s3.bucket}/up`,
    PLANETARION_S3_ENDPOINT: proxy.endpoint,
    ...s3Credentials,
  };
  const proxied = await OffsiteStore.open(offsiteConfig(settingsOf(env))!, env);
  return {
    proxy,
    store: proxied,
    async close() {
      proxied.close();
      await proxy.down();
    },
  };
}
/**
 * The multipart upload was aborted and never completed. (Not: no request after the abort. A part
 * cancelled while its body was on the wire can reach the proxy after the DELETE; S3 refuses it.)
 */
function assertAborted(seen: RequestInfo[], key: string): void {
  const ofUpload = seen.filter((q) => q.path.endsWith(`/${key}`) && q.query.has('uploadId'));
  assert.is(new Set(ofUpload.map((q) => q.query.get('uploadId'))).size, 1, 'one multipart upload');
  assert.ok(
    ofUpload.some((q) => q.method === 'DELETE'),
    'AbortMultipartUpload was not sent',
  );
  assert.not.ok(
    ofUpload.some((q) => q.method === 'POST'),
    'CompleteMultipartUpload was sent',
  );
}
upload('a part that fails on every attempt: the upload is aborted and no object is left', async () => {
  const name = 'planetarion_backup_20250101_000005.sql';
  const path = backupFile(name, sample(partSize * 5 + 99));
  const fault = await throughProxy((q) =>
    q.method === 'PUT' && q.query.get('partNumber') === '3' ? { status: 500, code: 'InternalError' } : 'pass',
  );
  try {
    await uploadBackup(fault.store, localFacts(path)!);
    assert.unreachable('uploaded');
  } catch (error) {
    assert.is((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 500, String(error));
  } finally {
    await fault.close();
  }
  assert.is(fault.proxy.seen.filter((q) => q.query.get('partNumber') === '3').length, 3, 'the SDK retried the part');
  // s3rver implements neither ListMultipartUploads nor AbortMultipartUpload: the requests show it.
  assertAborted(fault.proxy.seen, `up/${name}`);
  assert.not.ok(s3.keys().some((k) => k.startsWith(`up/${name}`)));
});
upload('an abort signal mid-upload stops the parts in flight, aborts the upload and leaves no object', async () => {
  const name = 'planetarion_backup_20250101_000006.sql';
  const path = backupFile(name, sample(partSize * 5 + 99));
  const abort = new AbortController();
  const fault = await throughProxy((q) => {
    if (q.method !== 'PUT' || q.query.get('partNumber') !== '2') return 'pass';
    abort.abort(new Error('stopped by the test'));
    return 'stall';
  });
  const file = { path, size: partSize * 5 + 99, metadata: {}, abort: abort.signal };
  try {
    await fault.store.uploadFile(name, file);
    assert.unreachable('uploaded');
  } catch (error) {
    assert.match(String(error), /abort|stopped by the test/i);
  } finally {
    await fault.close();
  }
  assertAborted(fault.proxy.seen, `up/${name}`);
  assert.ok(fault.proxy.seen.filter((q) => q.query.has('partNumber')).length <= 4, 'parts were read after the abort');
  assert.not.ok(s3.keys().some((k) => k.startsWith(`up/${name}`)));
});
upload.run();
