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
  outliveTerminal();
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

/**
 * Keeps the process alive when its terminal goes away (a lost SSH session): every later write to
 * it fails (EIO; EPIPE for a pipe whose reader is gone), and an unhandled stream error ends the
 * process on the spot. A restore or deploy would then die at the log line of the SIGHUP it was
 * stopping for, before its safe point, leaving the live database fenced or the writers stopped.
 * The log file keeps the record; what could not be shown is lost with the terminal.
 */
export function outliveTerminal(streams: NodeJS.WriteStream[] = [process.stdout, process.stderr]): void {
  for (const stream of streams) if (stream.listenerCount('error') === 0) stream.on('error', () => {});
}
