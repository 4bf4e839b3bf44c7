// The optional monitoring ping (healthchecks.io style). It reports; it never decides: a failed
// ping is logged and the backup's outcome stands.
import type { Logger } from './log.ts';

/** GETs `<url>` on success or `<url>/fail` on failure, within a short timeout; logs what happened. */
export async function sendPing(url: string | undefined, ok: boolean, log: Logger, timeoutMs = 10_000): Promise<boolean> {
  if (!url) return false;
  const target = ok ? url : `${url}/fail`;
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
