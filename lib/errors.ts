/** Exit codes of every command: the one place they are defined. */
export const ExitCode = {
  ok: 0,
  /** The operation ran and failed. */
  failed: 1,
  /** Bad usage or configuration: nothing was touched. */
  usage: 2,
  /** Another run holds the shared lock. */
  locked: 75,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Our exit code for another run's status (a run on the NAS): usage and locked kept, anything else failed. */
export function exitCodeOf(status: number): ExitCode {
  return status === ExitCode.ok || status === ExitCode.usage || status === ExitCode.locked ? status : ExitCode.failed;
}

/** A failure the user can act on: printed as `Error: <message>` plus advice, without a stack. */
export class CliError extends Error {
  readonly exitCode: ExitCode;
  readonly advice?: string;
  constructor(message: string, options: { exitCode?: ExitCode; advice?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'CliError';
    this.exitCode = options.exitCode ?? ExitCode.failed;
    this.advice = options.advice;
  }
}

/** A bad flag, setting or argument (exit 2). */
export class UsageError extends CliError {
  constructor(message: string, advice?: string) {
    super(message, { exitCode: ExitCode.usage, advice });
    this.name = 'UsageError';
  }
}

/** The text of any thrown value, for logs and diagnostics. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
