// `depends_on: {migrate: {condition: service_completed_successfully}}`: Compose starts such a
// service only once the one it names has run and exited 0. The A-B deployment starts the new
// slot's created containers itself (docker start, in Compose's order), so it must wait the same
// way: an app started beside a migration that has not finished would run on the old schema.
import type { Docker } from '../host/docker.ts';
import { CliError } from '../errors.ts';
import { readComposeFile } from '../host/compose.ts';

/** For each service, the services that must have completed successfully before it starts. */
export function completionDependencies(composeFile: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [service, spec] of Object.entries(readComposeFile(composeFile).services)) {
    const deps = spec.depends_on;
    if (!deps || typeof deps !== 'object' || Array.isArray(deps)) continue;
    const completed = Object.entries(deps as Record<string, { condition?: string } | null>)
      .filter(([, how]) => how?.condition === 'service_completed_successfully')
      .map(([name]) => name);
    if (completed.length) out.set(service, completed);
  }
  return out;
}

/** Waits until every container has exited 0; one that exits otherwise, or is gone, fails at once. */
export async function waitCompleted(
  docker: Docker,
  names: string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const states = await docker.inspectMany(names);
    const failed = states.findIndex(
      (s) => !s.exists || (['exited', 'dead'].includes(s.status ?? '') && s.exitCode !== 0),
    );
    if (failed >= 0) {
      const s = states[failed]!;
      throw new CliError(
        `container '${names[failed]}', which the next services need to complete first, ${s.exists ? `exited with ${s.exitCode}` : 'is missing'}`,
        { advice: `See 'docker logs ${names[failed]}'.` },
      );
    }
    if (states.every((s) => s.status === 'exited')) return;
    if (Date.now() > until)
      throw new CliError(
        `containers did not complete within ${Math.round(timeoutMs / 1000)} s: ${names.filter((_, i) => states[i]!.status !== 'exited').join(', ')}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
