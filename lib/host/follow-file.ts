// Reads a file while another process writes it, like `tail -f` that knows when to stop: the
// backup lets `docker exec` write the dump straight into its file (as the raw
// `docker exec … pg_dump > file` does) and hashes and inspects the bytes behind it, instead
// of relaying every byte through a pipe of its own.
import { open } from 'node:fs/promises';

export interface FollowOptions {
  /** Bytes read at a time (default 1 MB). */
  chunkSize?: number;
  /** How long to wait for more when the reader has caught up with the writer (default 20 ms). */
  pollMs?: number;
}

/**
 * Yields the file's bytes in order, from its start, until `writerDone` has settled and the end
 * has been read. Every chunk is a view of one reused buffer, valid until the next is asked for:
 * a consumer that keeps bytes copies them. (Fresh buffers would pile up as garbage in step with
 * the file's size until V8 collects them: the backup's peak RSS grew with the database.)
 */
export async function* followFile(
  path: string,
  writerDone: Promise<unknown>,
  options: FollowOptions = {},
): AsyncGenerator<Buffer> {
  const chunkSize = options.chunkSize ?? 1024 * 1024;
  const pollMs = options.pollMs ?? 20;
  let finished = false;
  const finish = (): void => {
    finished = true;
  };
  const settled = writerDone.then(finish, finish);
  const file = await open(path, 'r');
  try {
    let position = 0;
    const buffer = Buffer.allocUnsafe(chunkSize);
    for (;;) {
      // Read after noting whether the writer had finished: a read that then finds nothing new
      // has seen every byte it wrote.
      const writerHadFinished = finished;
      const { bytesRead } = await file.read(buffer, 0, chunkSize, position);
      if (bytesRead > 0) {
        position += bytesRead;
        yield buffer.subarray(0, bytesRead);
        continue;
      }
      if (writerHadFinished) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([settled, new Promise((resolve) => (timer = setTimeout(resolve, pollMs)))]);
      clearTimeout(timer);
    }
  } finally {
    await file.close();
  }
}
