// Executing a deployment plan: its phases one after the other, with one owner of rollback for
// the whole flow. Any failure before the switch, and SIGINT/SIGTERM/SIGHUP at any point before
// it, go to that one abort path; the switch itself is never interrupted halfway.
import { CliError, errorText } from '../errors.ts';
import type { Logger } from '../log.ts';

/** One named step of a deployment: what the dry run prints and what the run executes. */
export interface Phase {
  name: string;
  /** What it does, for --dry-run and the log. */
  describe: string;
  /** From this phase on, a failure no longer rolls back (the switch and what follows). */
  committed?: boolean;
  run: () => Promise<void>;
}

/**
 * One phase that runs independent phases at once (neither reads what the other does). It ends
 * when all have settled, so the rollback never runs beside one of them, and fails with the first
 * failure in plan order.
 */
export function alongside(...phases: Phase[]): Phase {
  return {
    name: phases.map((phase) => phase.name).join(' + '),
    describe: phases.map((phase) => phase.describe).join('; at the same time, '),
    run: async () => {
      const failed = (await Promise.allSettled(phases.map((phase) => phase.run()))).find(
        (outcome) => outcome.status === 'rejected',
      );
      if (failed) throw failed.reason;
    },
  };
}

const stopSignals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** How long an interrupted phase may take to settle before the rollback runs anyway. */
const settleMs = 60_000;

/** The signals of the run: an AbortSignal for long waits, and a promise that rejects on the first one. */
function watchSignals(log: Logger) {
  const controller = new AbortController();
  let fail: (error: Error) => void = () => {};
  const received = new Promise<never>((_, reject) => (fail = reject));
  received.catch(() => {});
  const handler = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) return log.warn(`${signal} again: the deployment is being rolled back, please wait`);
    log.error(`${signal} received: stopping the deployment`);
    const error = new CliError(`interrupted by ${signal}`, {
      advice: 'The live deployment was restored: its writers run again and the new slot was removed.',
    });
    controller.abort(error);
    fail(error);
  };
  for (const signal of stopSignals) process.on(signal, handler);
  return {
    abort: controller.signal,
    received,
    dispose: () => {
      for (const signal of stopSignals) process.off(signal, handler);
    },
  };
}

/** Waits for a promise to settle, at most `ms`. */
async function settle(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => {}), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/**
 * Runs the phases in order. On a failure or a signal before the first committed phase, the
 * interrupted phase is let settle, then `rollback` runs once and the error is thrown (exit 1).
 * A signal during a committed phase waits for the phase sequence to end, then exits non-zero.
 */
export async function runPhases(
  phases: Phase[],
  rollback: () => Promise<void>,
  log: Logger,
  useAbort: (abort: AbortSignal) => void,
): Promise<void> {
  const signals = watchSignals(log);
  useAbort(signals.abort);
  let committed = false;
  try {
    for (const [i, phase] of phases.entries()) {
      committed ||= Boolean(phase.committed);
      if (!committed) signals.abort.throwIfAborted();
      log.info(`Phase ${i + 1}/${phases.length} ${phase.name}: ${phase.describe}`);
      const running = phase.run();
      if (committed) {
        await running;
        continue;
      }
      try {
        await Promise.race([running, signals.received]);
      } catch (error) {
        await settle(running, settleMs);
        throw error;
      }
    }
    if (signals.abort.aborted)
      throw new CliError(`${errorText(signals.abort.reason)} after the switch`, {
        advice: 'The new slot is live and recorded; see deploy-to-qnap --status.',
      });
  } catch (error) {
    // Whatever the interrupted phase threw on its way down, the signal is what stopped the run.
    const reason = !committed && signals.abort.aborted ? signals.abort.reason : error;
    if (!committed) {
      log.error(`The deployment stopped before the switch: ${errorText(reason)}; rolling back`);
      await rollback();
    }
    throw reason;
  } finally {
    signals.dispose();
  }
}
