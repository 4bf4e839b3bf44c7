// A prototype for comparison, not the tool's code: the same upload as bench/offsite-upload.ts
// (the file, sha256 metadata, confirmed by HeadObject against the MD5s hashed on the way) without
// @aws-sdk/lib-storage's stream path. lib-storage copies every part of a stream body into a fresh
// buffer (Buffer.concat), and new memory costs a page fault per 4 KiB; here each part is read from
// the file straight into one of queueSize buffers allocated once and reused, so memory is bounded
// by queueSize x partSize whatever the file's size. The sidecars are left out (two small PUTs).
// Usage: tsx bench/offsite-upload-pooled.ts FILE s3://BUCKET/PREFIX ENDPOINT   (credentials in the environment)
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import * as sdk from '@aws-sdk/client-s3';
import { partSize } from '../lib/offsite/client.ts';
import { readChecksum } from '../lib/store/manifest.ts';

const queueSize = 4;
const [file, url, endpoint] = process.argv.slice(2) as [string, string, string];
const [, Bucket, prefix] = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url)!;
const Key = `${prefix ? `${prefix.replace(/\/?$/, '/')}` : ''}${basename(file)}`;
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const client = new sdk.S3Client({
  region: 'us-east-1',
  endpoint,
  forcePathStyle: true,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
});
const size = statSync(file).size;
const metadata = { sha256: readChecksum(file)! };
const sha256 = createHash('sha256');
const whole = createHash('md5');
const digests: Buffer[] = [];

/** queueSize buffers; take() waits for one to come back from an upload. */
const free: Buffer[] = Array.from({ length: queueSize }, () => Buffer.allocUnsafe(partSize));
const waiting: ((b: Buffer) => void)[] = [];
const take = () => (free.length ? Promise.resolve(free.pop()!) : new Promise<Buffer>((r) => waiting.push(r)));
const give = (b: Buffer) => (waiting.length ? waiting.shift()!(b) : free.push(b));

const handle = await open(file, 'r');
async function readPart(buffer: Buffer, index: number): Promise<Buffer> {
  const want = Math.min(partSize, size - index * partSize);
  for (let got = 0; got < want; ) {
    const { bytesRead } = await handle.read(buffer, got, want - got, index * partSize + got);
    if (bytesRead === 0) throw new Error(`${file} shrank while it was uploaded`);
    got += bytesRead;
  }
  const data = buffer.subarray(0, want);
  sha256.update(data);
  whole.update(data);
  digests.push(createHash('md5').update(data).digest());
  return data;
}

try {
  const parts = Math.max(1, Math.ceil(size / partSize));
  if (parts === 1) {
    const data = await readPart(await take(), 0);
    await client.send(new sdk.PutObjectCommand({ Bucket, Key, Body: data, Metadata: metadata }));
  } else {
    const { UploadId } = await client.send(new sdk.CreateMultipartUploadCommand({ Bucket, Key, Metadata: metadata }));
    const etags: string[] = [];
    const inFlight: Promise<void>[] = [];
    for (let i = 0; i < parts; i++) {
      const buffer = await take();
      const data = await readPart(buffer, i);
      inFlight.push(
        client
          .send(new sdk.UploadPartCommand({ Bucket, Key, UploadId, PartNumber: i + 1, Body: data }))
          .then((answer) => {
            etags[i] = answer.ETag!;
          })
          .finally(() => give(buffer)),
      );
    }
    await Promise.all(inFlight);
    const Parts = etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 }));
    await client.send(new sdk.CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts } }));
  }
  const head = await client.send(new sdk.HeadObjectCommand({ Bucket, Key }));
  const ofParts = createHash('md5');
  for (const digest of digests) ofParts.update(digest);
  const etags = [whole.digest('hex'), `${ofParts.digest('hex')}-${digests.length}`];
  if (head.ContentLength !== size || head.Metadata?.sha256 !== sha256.digest('hex') || metadata.sha256 === undefined)
    throw new Error(`${Key}: size or sha256 not confirmed`);
  if (!etags.includes((head.ETag ?? '').replace(/"/g, ''))) throw new Error(`${Key}: ETag ${head.ETag} not confirmed`);
} finally {
  await handle.close();
  client.destroy();
}
