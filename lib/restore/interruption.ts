// SIGINT, SIGTERM and SIGHUP during a restore: instead of dying wherever the signal lands (a
// live database fenced off from connections, a load half done), the run stops at its next safe
// point. Before the rename commits that means undoing (drop the scratch database, let
// connections in again); after it, finishing the few steps that re-enable connections.
import { CliError } from '../errors.ts';
import type { Logger } from '../log.ts';

const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Thrown at a safe point after a signal: the run stops there, having undone what it started. */
export class InterruptedError extends CliError {
  constructor(readonly signal: string) {
    super(`interrupted by ${signal}`);
    this.name = 'InterruptedError';
  }
}

/** Throws an InterruptedError when the signal was raised: call it at each safe point. */
export function checkpoint(abort: AbortSignal | undefined): void {
  if (abort?.aborted) throw new InterruptedError(String(abort.reason));
}

/** Catches the three signals while installed; `abort` fires on the first one. */
export class Interruption {
  private readonly controller = new AbortController();
  readonly abort: AbortSignal = this.controller.signal;
  private readonly handler = (signal: NodeJS.Signals) => {
    if (this.abort.aborted) {
      this.log.warn(`Received ${signal} again: still stopping at the next safe point`);
      return;
    }
    this.log.warn(
      `Received ${signal}: stopping at the next safe point; the live database is left accepting connections`,
    );
    this.controller.abort(signal);
  };

  constructor(private readonly log: Logger) {
    for (const signal of signals) process.on(signal, this.handler);
  }

  /** Restores the default handling (call it in a finally). */
  uninstall(): void {
    for (const signal of signals) process.off(signal, this.handler);
  }
}
