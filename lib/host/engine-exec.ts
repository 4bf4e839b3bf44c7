// `docker exec -i` spoken to the engine's socket directly: create the exec, start it on a hijacked
// connection, demultiplex its stdout and stderr, and read its exit code. The dump's exec is on
// every backup's critical path, and the CLI costs it a process start of its own and its calls
// before the exec (version ping, the container's inspect), on a NAS whose cores the exec's start
// keeps busy. What the caller sees is what a ChildProcess of `docker exec -i` gives it: stdin,
// stdout (a pipe, or written into a file descriptor as the CLI's `> file` would), stderr, kill()
// and a 'close' event with the exit code. The engine's refusals come on stderr as the CLI words
// them ("Error response from daemon: …"), with exit status 1. node:http takes ~30 ms to load;
// the few requests are spoken over node:net (as engine-socket.ts does).
import { EventEmitter } from 'node:events';
import { writeSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { PassThrough, Writable } from 'node:stream';

export interface EngineExecRequest {
  socket: string;
  container: string;
  argv: string[];
  env?: string[];
  /** A file descriptor the exec's stdout is written into, or 'pipe' for the stdout stream. */
  stdout: number | 'pipe';
}

/** An answer over HTTP/1.x: its status, and the bytes after the header. Pure. */
export function splitAnswer(answer: Buffer): { status: number; body: Buffer } | undefined {
  const end = answer.indexOf('\r\n\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(answer.subarray(0, Math.max(end, 0)).toString('latin1'))?.[1];
  return end < 0 || !status ? undefined : { status: Number(status), body: answer.subarray(end + 4) };
}

/** The engine's message in an error answer (`{"message": …}`), else its text. Pure. */
export function engineMessage(body: Buffer): string {
  const text = body.toString('utf8').trim();
  try {
    const message = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof message === 'string') return message;
  } catch {}
  return text || 'no answer';
}

/**
 * Splits the engine's multiplexed stream (8-byte frame headers: stream 1 stdout or 2 stderr, and
 * the payload's length) into payloads, across the chunks they arrive in. Pure but for `deliver`.
 */
export class Demultiplexer {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly deliver: (stream: number, payload: Buffer) => void) {}

  feed(chunk: Buffer): void {
    let data = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (data.length >= 8) {
      const size = data.readUInt32BE(4);
      if (data.length < 8 + size) break;
      this.deliver(data[0]!, data.subarray(8, 8 + size));
      data = data.subarray(8 + size);
    }
    // Copied: the chunk's buffer may be the socket's to reuse.
    this.pending = Buffer.from(data);
  }

  /** Bytes of a frame that never ended. */
  get leftover(): number {
    return this.pending.length;
  }
}

/** One request on a connection of its own (HTTP/1.0: the engine closes it after the answer). */
function ask(socket: string, method: string, path: string, body?: object): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const connection = createConnection(socket);
    const text = body ? JSON.stringify(body) : '';
    connection.on('connect', () =>
      connection.end(
        `${method} ${path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
      ),
    );
    connection.on('data', (chunk: Buffer) => chunks.push(chunk));
    connection.on('error', reject);
    connection.on('end', () => {
      const answer = splitAnswer(Buffer.concat(chunks));
      if (answer) resolve(answer);
      else reject(new Error(`the engine's answer to ${method} ${path} is not HTTP`));
    });
  });
}

/** How long the exit code may lag behind the end of the exec's streams, and how often it is asked. */
const exitCodeWaitMs = 10_000;
const exitCodePollMs = 10;

/**
 * The exec, started at once; every failure ends up as a 'close' with stderr saying why, as the
 * CLI's would. It has the parts of a ChildProcess the dump uses: 'close' gets (code, signal).
 */
export class EngineExec extends EventEmitter {
  readonly stdin: Writable;
  readonly stderr = new PassThrough();
  readonly stdout: PassThrough | null;
  private connection: Socket | undefined;
  private killed = false;
  private ended = false;
  private attached: (socket: Socket | undefined) => void = () => {};

  constructor(private readonly request: EngineExecRequest) {
    super();
    this.stdout = request.stdout === 'pipe' ? new PassThrough() : null;
    // The exec's input goes to the hijacked connection once it is up; none, if it never comes.
    const attachedSocket = new Promise<Socket | undefined>((resolve) => (this.attached = resolve));
    this.stdin = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        attachedSocket.then((socket) => (socket?.writable ? socket.write(chunk, () => callback()) : callback()));
      },
      final(callback) {
        // The half-close is the exec's end of input; its output keeps coming.
        attachedSocket.then((socket) => {
          if (socket?.writable) socket.end();
          callback();
        });
      },
    });
    this.run().catch((error: unknown) => {
      if (!this.killed)
        this.close(1, null, `the Docker engine's socket ${request.socket} failed: ${(error as Error).message}`);
    });
  }

  kill(_signal?: NodeJS.Signals): boolean {
    if (this.ended) return false;
    this.killed = true;
    this.connection?.destroy();
    this.close(null, 'SIGKILL');
    return true;
  }

  private close(code: number | null, signal: NodeJS.Signals | null, message?: string): void {
    if (this.ended) return;
    this.ended = true;
    this.attached(undefined);
    if (message) this.stderr.write(`${message}\n`);
    this.stdout?.end();
    this.stderr.end();
    // After the streams' last data has been read, as a child's 'close' comes.
    setImmediate(() => this.emit('close', code, signal));
  }

  private async run(): Promise<void> {
    const { socket, container, argv, env } = this.request;
    const created = await ask(socket, 'POST', `/containers/${encodeURIComponent(container)}/exec`, {
      AttachStdin: true,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      Env: env ?? [],
      Cmd: argv,
    });
    if (created.status !== 201)
      return this.close(1, null, `Error response from daemon: ${engineMessage(created.body)}`);
    const id = (JSON.parse(created.body.toString('utf8')) as { Id: string }).Id;
    if (this.killed) return;
    const ended = await this.startAttached(id);
    if (this.killed || ended !== 'ended') return;
    for (const deadline = Date.now() + exitCodeWaitMs; Date.now() < deadline; ) {
      const answer = await ask(socket, 'GET', `/exec/${id}/json`);
      if (this.ended) return; // killed meanwhile
      if (answer.status !== 200)
        return this.close(1, null, `Error response from daemon: ${engineMessage(answer.body)}`);
      const state = JSON.parse(answer.body.toString('utf8')) as { Running: boolean; ExitCode: number | null };
      if (!state.Running) return this.close(state.ExitCode ?? 1, null);
      await new Promise((resolve) => setTimeout(resolve, exitCodePollMs));
    }
    this.close(1, null, `the engine did not report the exit code of exec ${id}`);
  }

  /** One payload of the exec's stdout, to where it goes; false once writing it into the file failed. */
  private output(payload: Buffer): boolean {
    const target = this.request.stdout;
    if (target === 'pipe') {
      const connection = this.connection;
      // One wait for 'drain' however many frames of the chunk being read still come.
      if (!this.stdout!.write(payload) && connection && !connection.isPaused()) {
        connection.pause();
        this.stdout!.once('drain', () => connection.resume());
      }
      return true;
    }
    try {
      for (let off = 0; off < payload.length; ) off += writeSync(target, payload, off);
      return true;
    } catch (error) {
      // As the CLI does when its `> file` fails: its message, and the exec cut off.
      this.connection?.destroy();
      this.close(1, null, `write /dev/stdout: ${(error as Error).message}`);
      return false;
    }
  }

  /**
   * POST /exec/{id}/start, upgraded to the raw stream; resolves 'ended' once the engine has closed
   * it after the whole output, 'failed' when it was closed here with the reason.
   */
  private startAttached(id: string): Promise<'ended' | 'failed'> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ path: this.request.socket, allowHalfOpen: true });
      this.connection = socket;
      const body = JSON.stringify({ Detach: false, Tty: false });
      let head: Buffer | undefined = Buffer.alloc(0);
      let refusal: { status: number; body: Buffer } | undefined;
      const fail = (message: string | undefined) => {
        socket.destroy();
        this.close(1, null, message);
        resolve('failed');
      };
      // Nothing is passed on once it has ended: a listener may have killed it in the middle of a
      // chunk of frames (the session's, when pg_dump failed), and its streams are ended.
      const demux = new Demultiplexer((stream, payload) => {
        if (this.ended) return;
        if (stream === 2) this.stderr.write(payload);
        else if (stream === 1 && !this.output(payload)) resolve('failed');
      });
      socket.on('connect', () =>
        socket.write(
          `POST /exec/${id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        ),
      );
      socket.on('data', (chunk: Buffer) => {
        if (this.ended) return;
        if (refusal) refusal.body = Buffer.concat([refusal.body, chunk]);
        else if (head === undefined) demux.feed(chunk);
        else {
          head = Buffer.concat([head, chunk]);
          const answer = splitAnswer(head);
          if (!answer) return;
          head = undefined;
          // A refusal's message may come in later chunks: it is read to the end.
          if (answer.status !== 101 && answer.status !== 200) refusal = answer;
          else {
            this.attached(socket);
            if (answer.body.length) demux.feed(answer.body);
          }
        }
      });
      socket.on('end', () => {
        // The exec is over; input not yet sent (a session never closed) has nowhere to go.
        if (refusal) fail(`Error response from daemon: ${engineMessage(refusal.body)}`);
        else if (head !== undefined) fail("the Docker engine closed the exec's start without an answer");
        else if (demux.leftover)
          fail(`the exec's output ended in the middle of a frame (${demux.leftover} bytes of it came)`);
        else {
          socket.destroy();
          resolve('ended');
        }
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(this.ended ? 'failed' : 'ended'));
    });
  }
}

/** Starts `docker exec -i` of request.argv over the engine's socket. */
export function engineExec(request: EngineExecRequest): EngineExec {
  return new EngineExec(request);
}
