// A real S3 server on loopback for the off-site tests (s3rver: files in a temp dir, real SigV4
// checks, multipart uploads), and a fault-injecting HTTP proxy in front of it that can answer
// 5xx, stall a request or refuse connections, per request.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join, relative } from 'node:path';
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
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
  const { port } = await server.run();
  const root = join(directory, bucket);
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    port,
    endpoint,
    bucket,
    keys: () => walk(root).filter((f) => f.endsWith(objectSuffix)).map((f) => relative(root, f).slice(0, -objectSuffix.length)).sort(),
    read: (key) => readFileSync(join(root, key + objectSuffix)),
    metadata(key) {
      const stored = JSON.parse(readFileSync(join(root, `${key}._S3rver_metadata.json`), 'utf8')) as Record<string, string>;
      return Object.fromEntries(Object.entries(stored).filter(([k]) => k.startsWith('x-amz-meta-')).map(([k, v]) => [k.slice('x-amz-meta-'.length), v]));
    },
    remove(key) {
      for (const suffix of [objectSuffix, `${objectSuffix}.md5`, '._S3rver_metadata.json']) rmSync(join(root, key + suffix), { force: true });
    },
    async put(key, body, metadata) {
      process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
      const { S3Client, PutObjectCommand } = await import('@aws-sdk/client-s3');
      const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3Credentials.AWS_ACCESS_KEY_ID, secretAccessKey: s3Credentials.AWS_SECRET_ACCESS_KEY } });
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
  let entries;
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
    if (fault === 'stall') {
      req.resume(); // take the body, never answer
      return;
    }
    if (fault !== 'pass') {
      req.resume();
      req.on('end', () => {
        res.writeHead(fault.status, { 'content-type': 'application/xml' });
        res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${fault.code}</Code><Message>injected by the test proxy</Message></Error>`);
      });
      return;
    }
    const upstream = request({ host: '127.0.0.1', port: this.target, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  }
}

/** A FaultProxy in front of `s3`, listening. */
export async function startFaultProxy(s3: TestS3): Promise<FaultProxy> {
  const proxy = new FaultProxy(s3.port);
  await proxy.up();
  return proxy;
}
