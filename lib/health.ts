// The checks before a backup touches anything: the daemon answers, the container exists and
// runs, Docker calls it healthy where it has a health check, and PostgreSQL accepts connections.
import { Docker, type ContainerState } from './docker.ts';
import { CliError } from './errors.ts';
import type { Logger } from './log.ts';
import type { Shell } from './shell.ts';

export interface DatabaseTarget {
  container: string;
  user: string;
  database: string;
}

/** The seed's documented message for a container that is not running. */
export function notRunningMessage(container: string): string {
  return `Database container '${container}' is not running`;
}

/** Runs every health check in order; throws a CliError naming the first that fails (after logging it). */
export async function checkDatabaseHealth(docker: Docker, $: Shell, target: DatabaseTarget, log: Logger): Promise<ContainerState> {
  const fail = (message: string, advice: string): never => {
    log.error(message);
    throw new CliError(message, { advice });
  };
  // pg_isready starts beside inspect (each is a `docker` round trip): its answer is only read
  // once inspect has found the container running, so the first failing check is still the one named.
  const readyCheck = $({ nothrow: true, timeout: '30s' })`${docker.binary} exec ${target.container} pg_isready -U ${target.user} -d ${target.database}`;
  readyCheck.catch(() => {});
  // inspect also proves the daemon answers (it fails with the daemon's error otherwise): one
  // `docker` call fewer on every run.
  const state = await docker.inspect(target.container).catch((error: CliError) => fail(error.message, error.advice ?? ''));
  // Not `compose up`: after an A-B deployment that would start a second stack beside the live slot.
  const startAdvice = `Check with 'docker ps -a | grep ${target.container}', start it with 'docker start ${target.container}', and see 'deploy-to-qnap --local --status' for the live slot.`;
  if (!state.exists) fail(`${notRunningMessage(target.container)} (no container of that name exists)`, startAdvice);
  if (!state.running) fail(`${notRunningMessage(target.container)} (status: ${state.status})`, startAdvice);
  if (state.health !== undefined && state.health !== 'healthy') {
    fail(
      `Database container '${target.container}' is not healthy (Docker health status: ${state.health})`,
      `See 'docker inspect --format "{{json .State.Health}}" ${target.container}' for the failing health check.`,
    );
  }
  const ready = await readyCheck;
  if (ready.exitCode !== 0) {
    fail(
      `PostgreSQL in '${target.container}' is not accepting connections (pg_isready: ${(ready.stdout + ready.stderr).trim() || `exit ${ready.exitCode}`})`,
      `See 'docker logs ${target.container}'.`,
    );
  }
  log.info(`Container '${target.container}' is running${state.health ? ` and ${state.health}` : ''}; PostgreSQL accepts connections`);
  return state;
}
