// The optional monitoring ping (healthchecks.io style). It reports; it never decides: a failed
// ping is logged and the backup's outcome stands.
import type { Logger } from '../log.ts';

/** What a ping says: a run started, succeeded or failed. */
export type PingSignal = 'start' | 'success' | 'fail';

/** The URL a signal is sent to: `<url>/start`, `<url>`, `<url>/fail`, as healthchecks.io expects. */
export function pingTarget(url: string, signal: PingSignal): string {
  return signal === 'success' ? url : `${url}/${signal}`;
}

/**
 * GETs the signal's URL within a short timeout; logs what happened. A start signal lets the
 * monitor measure the run and alert on one that never ends.
 */
export async function sendPing(
  url: string | undefined,
  signal: PingSignal,
  log: Logger,
  timeoutMs = 10_000,
): Promise<boolean> {
  if (!url) return false;
  const target = pingTarget(url, signal);
  // The path of a ping URL is its secret (healthchecks.io's UUID): only the host is logged.
  const shown = new URL(target).origin;
  try {
    const response = await fetch(target, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) {
      log.warn(`monitoring ping ${shown} answered HTTP ${response.status}`);
      return false;
    }
    return true;
  } catch (error) {
    log.warn(`monitoring ping ${shown} failed: ${(error as Error).message}`);
    return false;
  }
}
