// The checks before a backup touches anything: the daemon answers, the container exists and
// runs, Docker calls it healthy where it has a health check, and PostgreSQL accepts connections.
import type { Docker, ContainerState } from './docker.ts';
import { CliError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Shell } from './shell.ts';

export interface DatabaseTarget {
  container: string;
  user: string;
  database: string;
}

/** The old scripts' documented message for a container that is not running (operators know it). */
export function notRunningMessage(container: string): string {
  return `Database container '${container}' is not running`;
}

/** PostgreSQL did not answer `pg_isready` (the container itself runs). */
export class NotReadyError extends CliError {
  constructor(container: string, probeOutput: string) {
    super(
      `PostgreSQL in '${container}' is not accepting connections (pg_isready: ${probeOutput.trim() || 'no output'})`,
      { advice: `See 'docker logs ${container}'.` },
    );
  }
}

/** Throws (after logging) the CliError of a failed check. */
function failCheck(log: Logger, message: string, advice: string): never {
  log.error(message);
  throw new CliError(message, { advice });
}

/**
 * Docker's view of the database container: the daemon answers, the container exists and runs,
 * and Docker calls it healthy where it has a health check. Throws a CliError naming the first
 * that fails (after logging it).
 */
export async function checkContainerState(
  docker: Docker,
  target: DatabaseTarget,
  log: Logger,
): Promise<ContainerState> {
  // inspect also proves the daemon answers (it fails with the daemon's error otherwise): one
  // `docker` call fewer on every run.
  const state = await docker
    .inspectQuick(target.container)
    .catch((error: CliError) => failCheck(log, error.message, error.advice ?? ''));
  // Not `compose up`: after an A-B deployment that would start a second stack beside the live slot.
  const startAdvice = `Check with 'docker ps -a | grep ${target.container}', start it with 'docker start ${target.container}', and see 'deploy-to-qnap --local --status' for the live slot.`;
  if (!state.exists)
    failCheck(log, `${notRunningMessage(target.container)} (no container of that name exists)`, startAdvice);
  if (!state.running) failCheck(log, `${notRunningMessage(target.container)} (status: ${state.status})`, startAdvice);
  if (state.health !== undefined && state.health !== 'healthy') {
    failCheck(
      log,
      `Database container '${target.container}' is not healthy (Docker health status: ${state.health})`,
      `See 'docker inspect --format "{{json .State.Health}}" ${target.container}' for the failing health check.`,
    );
  }
  log.info(`Container '${target.container}' is running${state.health ? ` and ${state.health}` : ''}`);
  return state;
}

/**
 * Runs every health check, `pg_isready` in a `docker exec` of its own; throws a CliError naming
 * the first that fails (after logging it). A backup runs pg_isready in its dump's `docker exec`
 * instead, and only once pg_dump has failed (see dump/pg-dump.ts): each exec costs ~0.07 s of CPU
 * on a NAS that pg_dump keeps busy.
 */
export async function checkDatabaseHealth(
  docker: Docker,
  $: Shell,
  target: DatabaseTarget,
  log: Logger,
): Promise<ContainerState> {
  // pg_isready starts beside inspect: its answer is only read once inspect has found the
  // container running, so the first failing check is still the one named.
  const probe = $({
    nothrow: true,
    timeout: '30s',
  })`${docker.binary} exec ${target.container} pg_isready -U ${target.user} -d ${target.database}`;
  probe.catch(() => {});
  const state = await checkContainerState(docker, target, log);
  const result = await probe;
  if (result.exitCode !== 0) {
    const error = new NotReadyError(target.container, result.stdout + result.stderr || `exit ${result.exitCode}`);
    log.error(error.message);
    throw error;
  }
  log.info(`PostgreSQL in '${target.container}' accepts connections`);
  return state;
}
