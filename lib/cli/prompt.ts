// Questions on the terminal and secrets on stdin. Library code never reads stdin itself: a command
// passes these in.
import { createInterface } from 'node:readline/promises';
import { UsageError } from '../errors.ts';

/** A yes/no question on the terminal (asked on stderr), or undefined when stdin is not a terminal. */
export function terminalAsk(): ((question: string) => Promise<boolean>) | undefined {
  if (!process.stdin.isTTY) return undefined;
  return async (question) => {
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      return /^y(es)?$/i.test((await rl.question(question)).trim());
    } finally {
      rl.close();
    }
  };
}

/**
 * A secret another program sends on standard input (never a terminal), kept in memory only; at most
 * 64 KiB. `flag` names the option in messages.
 */
export async function readSecretFromStdin(
  flag: string,
  about: { what: string; advice: string; expected: string },
): Promise<string> {
  if (process.stdin.isTTY)
    throw new UsageError(`${flag} needs ${about.what} on standard input, not a terminal`, about.advice);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024)
      throw new UsageError(`${flag}: more than 64 KiB on standard input; expected ${about.expected}`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
