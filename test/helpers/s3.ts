// A real S3 server on loopback for the off-site tests (s3rver: files in a temp dir, multipart
// uploads), and a fault-injecting HTTP proxy in front of it that can answer 5xx, stall a request
// or refuse connections, per request. s3rver checks that the access key exists but not a SigV4
// signature (its authentication middleware accepts any version-4 signature), so the proxy checks
// every signature with the SDK's own signer and answers 403 SignatureDoesNotMatch as S3 does.
import { createHash, createHmac } from 'node:crypto';
import {
  createServer,
  request,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { type Dirent, readdirSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join, relative } from 'node:path';
import { SignatureV4 } from '@smithy/signature-v4';
import S3rver from 's3rver';
import { makeTempDir, removeTempDir } from './tmp.ts';

/** s3rver's built-in key pair. */
export const s3Credentials = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

export interface TestS3 {
  port: number;
  endpoint: string;
  bucket: string;
  /** The keys stored in the bucket, sorted (read from the server's own files, not through S3). */
  keys(): string[];
  /** The stored bytes of an object, as the server keeps them on disk. */
  read(key: string): Buffer;
  /** The user metadata the server stored with an object (x-amz-meta-* without the prefix). */
  metadata(key: string): Record<string, string>;
  /** Removes an object behind the server's back (as a provider's lifecycle rule or an operator would). */
  remove(key: string): void;
  /** Writes an object through S3 with the SDK (foreign objects, tampered copies). */
  put(key: string, body: Buffer | string, metadata?: Record<string, string>): Promise<void>;
  stop(): Promise<void>;
}

const objectSuffix = '._S3rver_object';

/** Starts s3rver on 127.0.0.1 (a free port) with one bucket, its data in a temp dir. */
export async function startS3(bucket = 'planetarion-offsite'): Promise<TestS3> {
  const directory = makeTempDir('planetarion-s3-');
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  const { port } = await server.run();
  const root = join(directory, bucket);
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    port,
    endpoint,
    bucket,
    keys: () =>
      walk(root)
        .filter((f) => f.endsWith(objectSuffix))
        .map((f) => relative(root, f).slice(0, -objectSuffix.length))
        .sort(),
    read: (key) => readFileSync(join(root, key + objectSuffix)),
    metadata(key) {
      const stored = JSON.parse(readFileSync(join(root, `${key}._S3rver_metadata.json`), 'utf8')) as Record<
        string,
        string
      >;
      return Object.fromEntries(
        Object.entries(stored)
          .filter(([k]) => k.startsWith('x-amz-meta-'))
          .map(([k, v]) => [k.slice('x-amz-meta-'.length), v]),
      );
    },
    remove(key) {
      for (const suffix of [objectSuffix, `${objectSuffix}.md5`, '._S3rver_metadata.json'])
        rmSync(join(root, key + suffix), { force: true });
    },
    async put(key, body, metadata) {
      process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
      const { S3Client, PutObjectCommand } = await import('@aws-sdk/client-s3');
      const client = new S3Client({
        endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: {
          accessKeyId: s3Credentials.AWS_ACCESS_KEY_ID,
          secretAccessKey: s3Credentials.AWS_SECRET_ACCESS_KEY,
        },
      });
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, Metadata: metadata }));
      client.destroy();
    },
    async stop() {
      await server.close();
      removeTempDir(directory);
    },
  };
}

function walk(dir: string): string[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

/** What the proxy does with one request: pass it on, answer an S3 error, or never answer. */
export type Fault = 'pass' | 'stall' | { status: number; code: string };

export interface RequestInfo {
  method: string;
  path: string;
  query: URLSearchParams;
}

/** A proxy in front of the S3 server; `rule` decides per request, `down()` refuses connections. */
export class FaultProxy {
  rule: (request: RequestInfo) => Fault = () => 'pass';
  readonly seen: RequestInfo[] = [];
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  port = 0;

  constructor(private readonly target: number) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Listens (again) on 127.0.0.1, on the same port as before if it had one. */
  async up(): Promise<void> {
    const server = createServer((req, res) => this.handle(req, res));
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops listening and cuts every open connection: clients get "connection refused". */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const info = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams };
    this.seen.push(info);
    const fault = this.rule(info);
    if (fault === 'pass') {
      // The body is not needed: the SDK signs S3 payloads as UNSIGNED-PAYLOAD or a declared hash.
      void signatureMatches(req.method ?? 'GET', url, req.headers).then((matches) => {
        if (matches) this.forward(req, res);
        else
          answerError(
            req,
            res,
            { status: 403, code: 'SignatureDoesNotMatch' },
            'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
          );
      });
      return;
    }
    if (fault === 'stall') {
      req.resume(); // take the body, never answer
      return;
    }
    answerError(req, res, fault, 'injected by the test proxy');
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const upstream = request(
      { host: '127.0.0.1', port: this.target, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    // A request the client gave up on mid-body would otherwise keep the server waiting for the rest.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }
}

function answerError(
  req: IncomingMessage,
  res: ServerResponse,
  fault: { status: number; code: string },
  message: string,
): void {
  req.resume();
  req.on('end', () => {
    res.writeHead(fault.status, { 'content-type': 'application/xml' });
    res.end(
      `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${fault.code}</Code><Message>${message}</Message></Error>`,
    );
  });
}

function bytes(data: string | ArrayBuffer | ArrayBufferView): string | Uint8Array {
  if (typeof data === 'string') return data;
  return ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array(data);
}

/** node:crypto as the signer's hash (an HMAC when it is given a secret). */
class NodeSha256 {
  private readonly hash;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return this.hash.digest();
  }
}

/**
 * Signs the request again with the secret the server knows for its access key, over the headers
 * the client says it signed, at the time it says it signed; a request without SigV4 is passed on
 * (the server itself refuses an unknown access key).
 */
async function signatureMatches(method: string, url: URL, headers: IncomingHttpHeaders): Promise<boolean> {
  const auth =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]+)$/.exec(
      String(headers.authorization ?? ''),
    );
  const date = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(String(headers['x-amz-date'] ?? ''));
  if (!auth || !date) return true;
  const [, accessKeyId, , region, service, signedHeaders, signature] = auth;
  if (accessKeyId !== s3Credentials.AWS_ACCESS_KEY_ID) return true;
  const signer = new SignatureV4({
    credentials: { accessKeyId, secretAccessKey: s3Credentials.AWS_SECRET_ACCESS_KEY },
    region,
    service,
    sha256: NodeSha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
  const names = signedHeaders.split(';');
  const query: Record<string, string | string[]> = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key);
    query[key] = values.length === 1 ? values[0] : values;
  }
  const signed = await signer.sign(
    {
      method,
      protocol: 'http:',
      hostname: url.hostname,
      path: url.pathname,
      query,
      headers: Object.fromEntries(names.map((name) => [name, String(headers[name] ?? '')])),
    },
    {
      signingDate: new Date(Date.UTC(+date[1], +date[2] - 1, +date[3], +date[4], +date[5], +date[6])),
      signableHeaders: new Set(names),
    },
  );
  return String(signed.headers.authorization ?? '').endsWith(`Signature=${signature}`);
}

/** A FaultProxy in front of `s3`, listening. */
export async function startFaultProxy(s3: TestS3): Promise<FaultProxy> {
  const proxy = new FaultProxy(s3.port);
  await proxy.up();
  return proxy;
}
