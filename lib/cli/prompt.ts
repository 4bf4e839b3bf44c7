// Questions on the terminal. Library code never reads stdin itself: a command passes this in.
import { createInterface } from 'node:readline/promises';

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
