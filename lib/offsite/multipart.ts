// Uploading a file from disk: a file of at most one part in one PutObject, a larger one in parts.
// Each part is read from the file straight into one of queueSize buffers allocated once and reused,
// so memory is bounded by those buffers whatever the file's size, and no part costs fresh memory
// (a stream body would be gathered into a new buffer per part, and new memory costs a page fault
// per 4 KiB). Parts are read in file order, so whoever hashes them sees the file as it is; any
// failure or abort ends the multipart upload with AbortMultipartUpload, so no part is left to count.
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { CliError } from '../errors.ts';
import type { Sdk } from './sdk.ts';

/** Bytes per multipart part; the upload keeps queueSize of them in memory. */
export const partSize = 8 * 1024 * 1024;
const queueSize = 4;

/** Where an upload goes: the client and the object's bucket and key. */
export interface UploadTarget {
  client: S3Client;
  sdk: Sdk;
  bucket: string;
  key: string;
}

/** A file to upload: `size` bytes of it, the object's metadata, who sees the bytes, what stops it. */
export interface FileUpload {
  path: string;
  size: number;
  metadata: Record<string, string>;
  /** Sees every part once, in file order, before it is sent (the buffer is reused afterwards). */
  onPart?: (data: Buffer) => void;
  abort?: AbortSignal;
}

/** Uploads the file; on any failure a multipart upload is aborted and the error thrown. */
export async function uploadFile(target: UploadTarget, file: FileUpload): Promise<void> {
  const handle = await open(file.path, 'r');
  try {
    if (file.size <= partSize) {
      const data = await readPart(handle, file, Buffer.allocUnsafe(file.size), 0);
      await putObject(target, data, file.metadata, file.abort);
    } else {
      await uploadParts(target, handle, file);
    }
  } finally {
    await handle.close();
  }
}

/** One PutObject of a body in memory. */
export async function putObject(
  target: UploadTarget,
  body: Buffer,
  metadata: Record<string, string>,
  abortSignal?: AbortSignal,
): Promise<void> {
  await target.client.send(
    new target.sdk.PutObjectCommand({
      Bucket: target.bucket,
      Key: target.key,
      Body: body,
      Metadata: metadata,
      ContentType: 'application/octet-stream',
    }),
    { abortSignal },
  );
}

/** Reads part `index` of the file into `buffer` and shows it to onPart; a file that shrank is an error. */
async function readPart(handle: FileHandle, file: FileUpload, buffer: Buffer, index: number): Promise<Buffer> {
  const start = index * partSize;
  const want = Math.min(partSize, file.size - start);
  for (let got = 0; got < want; ) {
    const { bytesRead } = await handle.read(buffer, got, want - got, start + got);
    if (bytesRead === 0) throw new CliError(`${file.path} shrank while it was uploaded`);
    got += bytesRead;
  }
  const data = buffer.subarray(0, want);
  file.onPart?.(data);
  return data;
}

/** queueSize part buffers; take() waits for one to come back. */
class BufferPool {
  private readonly free: Buffer[] = Array.from({ length: queueSize }, () => Buffer.allocUnsafe(partSize));
  private readonly waiting: ((buffer: Buffer) => void)[] = [];

  take(): Promise<Buffer> {
    const buffer = this.free.pop();
    return buffer ? Promise.resolve(buffer) : new Promise((resolve) => this.waiting.push(resolve));
  }

  give(buffer: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(buffer);
    else this.free.push(buffer);
  }
}

/** CreateMultipartUpload, the parts (queueSize at a time), CompleteMultipartUpload; aborted on any failure. */
async function uploadParts(target: UploadTarget, handle: FileHandle, file: FileUpload): Promise<void> {
  const { client, sdk, bucket: Bucket, key: Key } = target;
  file.abort?.throwIfAborted();
  const created = await client.send(
    new sdk.CreateMultipartUploadCommand({
      Bucket,
      Key,
      Metadata: file.metadata,
      ContentType: 'application/octet-stream',
    }),
    { abortSignal: file.abort },
  );
  const UploadId = created.UploadId;
  if (!UploadId) throw new Error(`the server started no multipart upload for ${Key} (no UploadId)`);
  // One signal for every request of this upload: the caller's abort, or the first failed part.
  const stop = new AbortController();
  const onAbort = () => stop.abort(file.abort?.reason);
  file.abort?.addEventListener('abort', onAbort, { once: true });
  try {
    const etags = await sendParts(target, handle, file, UploadId, stop);
    await client.send(
      new sdk.CompleteMultipartUploadCommand({
        Bucket,
        Key,
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
      { abortSignal: stop.signal },
    );
  } catch (error) {
    // Best effort: parts left behind are no object, and a lifecycle rule expires them.
    await client.send(new sdk.AbortMultipartUploadCommand({ Bucket, Key, UploadId })).catch(() => {});
    throw error;
  } finally {
    file.abort?.removeEventListener('abort', onAbort);
  }
}

/**
 * Reads the parts in order into pooled buffers and sends each as soon as it is read, at most
 * queueSize at a time; returns their ETags. On the first failure it stops reading, cancels the
 * parts in flight and waits for them to end (so none arrives after the abort), then throws.
 */
async function sendParts(
  target: UploadTarget,
  handle: FileHandle,
  file: FileUpload,
  UploadId: string,
  stop: AbortController,
): Promise<string[]> {
  const pool = new BufferPool();
  const etags: string[] = [];
  const inFlight: Promise<void>[] = [];
  let failure: { error: unknown } | undefined;
  const fail = (error: unknown) => {
    failure ??= { error };
    stop.abort(error);
  };
  const parts = Math.ceil(file.size / partSize);
  for (let index = 0; index < parts && !stop.signal.aborted; index++) {
    const buffer = await pool.take();
    if (stop.signal.aborted) break;
    const data = await readPart(handle, file, buffer, index).catch((error: unknown) => {
      fail(error);
      return undefined;
    });
    if (!data) break;
    const sent = target.client.send(
      new target.sdk.UploadPartCommand({
        Bucket: target.bucket,
        Key: target.key,
        UploadId,
        PartNumber: index + 1,
        Body: data,
      }),
      { abortSignal: stop.signal },
    );
    inFlight.push(
      sent
        .then((answer) => {
          if (!answer.ETag) throw new Error(`the server gave part ${index + 1} of ${target.key} no ETag`);
          etags[index] = answer.ETag;
        })
        .catch(fail)
        .finally(() => pool.give(buffer)),
    );
  }
  await Promise.all(inFlight);
  if (failure) throw failure.error;
  // Aborted by the caller between parts, with nothing in flight to carry the reason.
  stop.signal.throwIfAborted();
  return etags;
}
