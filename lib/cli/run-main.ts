import { CliError, ExitCode } from '../errors.ts';

/**
 * Runs a command's body and turns its outcome into an exit code. A CliError prints
 * `Error: <message>` and its advice; anything else is a bug and prints its stack.
 * Sets process.exitCode rather than calling process.exit(), so buffered output is not cut off.
 */
export async function runMain(
  body: () => Promise<void>,
  stderr: NodeJS.WritableStream = process.stderr,
): Promise<number> {
  let code: number = ExitCode.ok;
  try {
    await body();
  } catch (error) {
    if (error instanceof CliError) {
      stderr.write(`Error: ${error.message}\n`);
      if (error.advice) stderr.write(`${error.advice}\n`);
      code = error.exitCode;
    } else {
      stderr.write(`Error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      code = ExitCode.failed;
    }
  }
  process.exitCode = code;
  return code;
}
