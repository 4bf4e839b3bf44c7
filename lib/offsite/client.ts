// The S3 client: the AWS SDK loaded only when off-site is configured (lib/offsite/sdk.ts), set up for
// S3-compatible servers, wrapped in the few operations the off-site copy needs, with errors
// turned into one line that says what is wrong.
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { errorText } from '../errors.ts';
import { resolveCredentials, serverName, type Credentials, type OffsiteConfig } from './config.ts';
import { type FileUpload, putObject, type UploadTarget, uploadFile } from './multipart.ts';
import { loadSdk, type Sdk } from './sdk.ts';

/** An object directly under the prefix (sub-prefixes are not ours and are not listed). */
export interface RemoteObject {
  name: string;
  size: number;
}

/** What HeadObject reports: the size and ETag the server computed, the metadata we sent. */
export interface RemoteHead {
  size: number;
  etag: string;
  metadata: Record<string, string>;
}

export { partSize } from './multipart.ts';

/** The off-site bucket and prefix, through one S3 client. */
export class OffsiteStore {
  private constructor(
    readonly config: OffsiteConfig,
    readonly credentials: Credentials,
    private readonly client: S3Client,
    private readonly sdk: Sdk,
  ) {}

  /** Loads the SDK and makes the client; credentials problems throw a UsageError before any request. */
  static async open(config: OffsiteConfig, env: NodeJS.ProcessEnv = process.env): Promise<OffsiteStore> {
    const credentials = resolveCredentials(config, env);
    // The executable carries its own Node: the SDK's advice to upgrade Node speaks to the wrong person.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
    const sdk = await loadSdk();
    const client = new sdk.S3Client({
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.pathStyle,
      // Given outright, so the SDK's default chain (which ends at the EC2 metadata address) never runs.
      credentials: {
        accessKeyId: credentials.accessKeyId,
        secretAccessKey: credentials.secretAccessKey,
        sessionToken: credentials.sessionToken,
      },
      // Since 3.729 the SDK sends aws-chunked bodies with trailing checksums by default, which several
      // S3-compatible servers store with the chunk framing inside the object. Plain bodies, checked here.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
      // Without throwOnRequestTimeout the handler only logs a stalled request and waits on forever.
      requestHandler: {
        connectionTimeout: Math.min(config.timeoutMs, 10_000),
        requestTimeout: config.timeoutMs,
        throwOnRequestTimeout: true,
      },
    });
    return new OffsiteStore(config, credentials, client, sdk);
  }

  /** The object key of a file name under the prefix. */
  key(name: string): string {
    return `${this.config.prefix}${name}`;
  }

  /** Every object directly under the prefix (all pages). */
  async list(): Promise<RemoteObject[]> {
    const out: RemoteObject[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new this.sdk.ListObjectsV2Command({
          Bucket: this.config.bucket,
          Prefix: this.config.prefix,
          Delimiter: '/',
          ContinuationToken: token,
        }),
      );
      for (const item of page.Contents ?? []) {
        if (item.Key?.startsWith(this.config.prefix))
          out.push({ name: item.Key.slice(this.config.prefix.length), size: item.Size ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** HeadObject; undefined when there is no such object. */
  async head(name: string): Promise<RemoteHead | undefined> {
    try {
      const head = await this.client.send(
        new this.sdk.HeadObjectCommand({ Bucket: this.config.bucket, Key: this.key(name) }),
      );
      return {
        size: head.ContentLength ?? -1,
        etag: (head.ETag ?? '').replace(/"/g, ''),
        metadata: head.Metadata ?? {},
      };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Uploads a file from disk with bounded memory (see multipart.ts); aborts a failed multipart upload. */
  async uploadFile(name: string, file: FileUpload): Promise<void> {
    await uploadFile(this.target(name), file);
  }

  /** Uploads a small body in one PutObject. */
  async put(name: string, body: Buffer, metadata: Record<string, string>): Promise<void> {
    await putObject(this.target(name), body, metadata);
  }

  private target(name: string): UploadTarget {
    return { client: this.client, sdk: this.sdk, bucket: this.config.bucket, key: this.key(name) };
  }

  /** A small object's text; undefined when it does not exist. */
  async getText(name: string): Promise<string | undefined> {
    const object = await this.get(name);
    return object ? Buffer.from(await object.body.transformToByteArray()).toString('utf8') : undefined;
  }

  /** An object's body as a stream, with its size and metadata; undefined when it does not exist. */
  async get(name: string): Promise<
    | {
        body: Readable & { transformToByteArray(): Promise<Uint8Array> };
        size: number;
        metadata: Record<string, string>;
      }
    | undefined
  > {
    try {
      const object = await this.client.send(
        new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: this.key(name) }),
      );
      return {
        body: object.Body as unknown as Readable & { transformToByteArray(): Promise<Uint8Array> },
        size: object.ContentLength ?? -1,
        metadata: object.Metadata ?? {},
      };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Deletes one object (a missing one is not an error in S3). */
  async delete(name: string): Promise<void> {
    await this.client.send(new this.sdk.DeleteObjectCommand({ Bucket: this.config.bucket, Key: this.key(name) }));
  }

  /** Closes the client's sockets so the process can exit at once. */
  close(): void {
    this.client.destroy();
  }
}

interface SdkError {
  name?: string;
  code?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
}

function isNotFound(error: unknown): boolean {
  const e = error as SdkError;
  return e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404;
}

/** The error's S3 code (AccessDenied, ...) or network code (ECONNREFUSED, ...). */
export function errorCode(error: unknown): string | undefined {
  const e = error as SdkError;
  return e.Code ?? e.code ?? (e.name && e.name !== 'Error' ? e.name : undefined);
}

/** Whether the server refused a request for lack of permission (not a bad key). */
export function isAccessDenied(error: unknown): boolean {
  return (
    errorCode(error) === 'AccessDenied' ||
    ((error as SdkError).$metadata?.httpStatusCode === 403 &&
      !['InvalidAccessKeyId', 'SignatureDoesNotMatch'].includes(errorCode(error) ?? ''))
  );
}

/** One line that says what went wrong with the server, naming the setting to fix; never a secret. */
export function describeS3Error(error: unknown, config: OffsiteConfig): string {
  const code = errorCode(error);
  const status = (error as SdkError).$metadata?.httpStatusCode;
  const server = serverName(config);
  switch (code) {
    case 'InvalidAccessKeyId':
      return `${server} does not know the access key (AWS_ACCESS_KEY_ID): wrong credentials`;
    case 'SignatureDoesNotMatch':
      return `${server} rejected the request signature: the secret key (AWS_SECRET_ACCESS_KEY) is wrong`;
    case 'AccessDenied':
      return `${server} denied access to ${config.url}: the credentials lack permission`;
    case 'NoSuchBucket':
      return `bucket '${config.bucket}' does not exist on ${server} (PLANETARION_OFFSITE)`;
    case 'PermanentRedirect':
    case 'AuthorizationHeaderMalformed':
      return `${server} says bucket '${config.bucket}' is in another region (PLANETARION_S3_REGION)`;
    case 'ECONNREFUSED':
      return `cannot connect to ${server}: connection refused (is it running? PLANETARION_S3_ENDPOINT)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot resolve ${server} (PLANETARION_S3_ENDPOINT)`;
    case 'TimeoutError':
    case 'RequestTimeout':
    case 'ETIMEDOUT':
      return `${server} did not answer within ${config.timeoutMs / 1000} s, 3 attempts (PLANETARION_S3_TIMEOUT)`;
  }
  if (status && status >= 500)
    return `${server} failed with HTTP ${status}${code ? ` (${code})` : ''} after 3 attempts`;
  return `${server}: ${code && !errorText(error).includes(code) ? `${code}: ` : ''}${errorText(error)}`;
}
