// Talking to the Docker engine: what state a container is in, and argv for `docker exec`.
import { CliError } from '../errors.ts';
import { engineSocket, inspectOverSocket } from './engine-socket.ts';
import type { Shell } from './shell.ts';

export interface ContainerState {
  exists: boolean;
  running: boolean;
  /** 'running', 'exited', ...; undefined when the container does not exist. */
  status: string | undefined;
  /** Docker's health status where the container has a health check ('healthy', 'starting', 'unhealthy'). */
  health: string | undefined;
  /** The image name it was created from, and the image id. */
  image: string | undefined;
  imageId: string | undefined;
  /** The exit code of a container that has exited. */
  exitCode: number | undefined;
  /**
   * Its health check, where it has one: the command (`["CMD", ...]` or `["CMD-SHELL", "..."]`),
   * the shell a CMD-SHELL runs in (the image's SHELL, else /bin/sh -c), the timeout, and whether
   * Docker has run it since the container's start (`startedAt`).
   */
  healthCheck?: { test: string[]; shell: string[]; timeoutMs: number; dockerHasRun: boolean; startedAt: string };
}

/** How long Docker lets a health check run when the container sets no timeout. */
const defaultHealthTimeoutMs = 30_000;

/** The argv of a health check's command for `docker exec`; undefined for none (`NONE`, or no command). Pure. */
export function healthCheckArgv(test: string[] | undefined, shell: string[] = ['/bin/sh', '-c']): string[] | undefined {
  const [kind, ...rest] = test ?? [];
  if (kind === 'CMD' && rest.length) return rest;
  if (kind === 'CMD-SHELL' && rest[0]) return [...shell, rest[0]];
  return undefined;
}

/** A container of a compose project, found by its labels. */
export interface ComposeContainer {
  name: string;
  project: string;
  service: string;
  /** The folder compose ran in (com.docker.compose.project.working_dir). */
  workingDir: string;
  running: boolean;
}

/** What `docker container inspect` (and the engine's GET /containers/{name}/json) says of a container, as far as it is read here. */
interface InspectInfo {
  Id: string;
  Name: string;
  State: {
    Status: string;
    Running: boolean;
    ExitCode: number;
    StartedAt: string;
    Health?: { Status: string; Log?: { Start: string }[] | null };
  };
  Config: { Image: string; Shell?: string[] | null; Healthcheck?: { Test?: string[]; Timeout?: number } };
  Image: string;
}

/** A container's state from its inspect JSON; exists=false for none. Pure. */
function containerStateOf(info: InspectInfo | undefined): ContainerState {
  if (!info)
    return {
      exists: false,
      running: false,
      status: undefined,
      health: undefined,
      image: undefined,
      imageId: undefined,
      exitCode: undefined,
    };
  return {
    exists: true,
    running: info.State.Running,
    status: info.State.Status,
    health: info.State.Health?.Status,
    image: info.Config.Image,
    imageId: info.Image,
    exitCode: info.State.Running ? undefined : info.State.ExitCode,
    ...(info.State.Health && info.Config.Healthcheck?.Test
      ? {
          healthCheck: {
            test: info.Config.Healthcheck.Test,
            shell: info.Config.Shell?.length ? info.Config.Shell : ['/bin/sh', '-c'],
            timeoutMs: (info.Config.Healthcheck.Timeout ?? 0) / 1e6 || defaultHealthTimeoutMs,
            // The log keeps the last runs, also those of an earlier start.
            dockerHasRun: (info.State.Health.Log ?? []).some(
              (run) => Date.parse(run.Start) >= Date.parse(info.State.StartedAt),
            ),
            startedAt: info.State.StartedAt,
          },
        }
      : {}),
  };
}

/** The docker CLI at a known path, run through the given shell. */
export class Docker {
  /**
   * @param engine the engine's socket for inspectQuick: undefined finds it as the CLI would
   *   (engineSocket), false never uses one.
   */
  constructor(
    readonly binary: string,
    private readonly $: Shell,
    private readonly engine?: string | false,
  ) {}

  /** The state of a container by name; exists=false when there is none. */
  async inspect(container: string): Promise<ContainerState> {
    return (await this.inspectMany([container]))[0]!;
  }

  /** The states of several containers in one `docker` call, in the order asked. */
  async inspectMany(containers: string[]): Promise<ContainerState[]> {
    if (!containers.length) return [];
    const out = await this.$({
      timeout: '30s',
      nothrow: true,
    })`${this.binary} container inspect --format ${'{{json .}}'} ${containers}`;
    // One missing container fails the call, and the others are still printed.
    const problems = out.stderr.split('\n').filter((line) => line.trim() && !/no such (container|object)/i.test(line));
    if (out.exitCode !== 0 && problems.length) {
      if (/cannot connect|daemon|permission denied/i.test(out.stderr)) {
        throw new CliError(`the Docker daemon does not answer (${this.binary}): ${out.stderr.trim()}`, {
          advice: 'Start Container Station (or dockerd), and run as a user allowed to use Docker.',
        });
      }
      throw new CliError(`docker container inspect ${containers.join(' ')} failed: ${out.stderr.trim()}`);
    }
    const found = out.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as InspectInfo);
    return containers.map((container) =>
      containerStateOf(found.find((i) => i.Name === `/${container}`) ?? found.find((i) => i.Id.startsWith(container))),
    );
  }

  /**
   * inspect, asked of the engine's socket first (lib/host/engine-socket.ts): the state that lets
   * a backup go on (running, and healthy where it has a check) is taken from there; any other
   * answer, or none, is asked of the CLI again, so the socket can make that answer faster but
   * never turn it into another one.
   */
  async inspectQuick(container: string): Promise<ContainerState> {
    const socket = this.engine === undefined ? engineSocket(this.binary) : this.engine || undefined;
    const info = socket ? ((await inspectOverSocket(socket, container)) as InspectInfo | null | undefined) : undefined;
    const state = info ? containerStateOf(info) : undefined;
    if (state?.running && (state.health === undefined || state.health === 'healthy')) return state;
    return this.inspect(container);
  }

  /** Every container (running or not) compose started, by one label filter (`label=KEY=VALUE`). */
  private async composeContainers(filter: string): Promise<ComposeContainer[]> {
    const format =
      '{{.Names}}\t{{.Label "com.docker.compose.project"}}\t{{.Label "com.docker.compose.service"}}\t{{.Label "com.docker.compose.project.working_dir"}}\t{{.State}}';
    const out = await this.$({ timeout: '30s' })`${this.binary} ps -a --filter ${filter} --format ${format}`;
    return out.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [name, project, service, workingDir, state] = line.split('\t');
        return {
          name: name!,
          project: project!,
          service: service!,
          workingDir: workingDir ?? '',
          running: state === 'running',
        };
      });
  }

  /** The containers of a compose project: name, service and whether it runs. */
  async projectContainers(project: string): Promise<ComposeContainer[]> {
    return this.composeContainers(`label=com.docker.compose.project=${project}`);
  }

  /** The compose project and service labels of a container, if it was started by compose. */
  async composeLabels(container: string): Promise<{ project: string | undefined; service: string | undefined }> {
    const format =
      '{{index .Config.Labels "com.docker.compose.project"}}\t{{index .Config.Labels "com.docker.compose.service"}}';
    const out = await this.$({ timeout: '30s' })`${this.binary} container inspect --format ${format} ${container}`;
    const [project, service] = out.stdout.trim().split('\t');
    return { project: project || undefined, service: service || undefined };
  }

  /** Every container (running or not) compose started for `service`, in any project. */
  async serviceContainers(service: string): Promise<ComposeContainer[]> {
    return this.composeContainers(`label=com.docker.compose.service=${service}`);
  }

  /** The volumes compose made for a project (com.docker.compose.project label). */
  async projectVolumes(project: string): Promise<string[]> {
    const out = await this.$({
      timeout: '30s',
    })`${this.binary} volume ls -q --filter ${`label=com.docker.compose.project=${project}`}`;
    return out.stdout.split('\n').filter(Boolean);
  }

  /** Renames a container (running or not); a refusal (name taken, no such container) is a CliError. */
  async rename(from: string, to: string): Promise<void> {
    const out = await this.$({ timeout: '30s', nothrow: true })`${this.binary} rename ${from} ${to}`;
    if (out.exitCode !== 0) {
      throw new CliError(
        `docker rename ${from} ${to} failed: ${out.stderr.trim().replace(/\s*\n\s*/g, ' ') || `exit ${out.exitCode}`}`,
        {
          advice: `See 'docker ps -a' for what holds the name '${to}'; deploy-to-qnap --status shows which slot is live.`,
        },
      );
    }
  }

  /** Stops containers (a no-op for an empty list). */
  async stop(names: string[]): Promise<void> {
    if (names.length) await this.$({ timeout: '120s' })`${this.binary} stop ${names}`;
  }

  /**
   * Stops a PostgreSQL container with a fast shutdown (SIGINT to its server): every session is
   * ended and what it had not committed rolled back, whatever the image's stop signal is.
   */
  async stopFast(name: string): Promise<void> {
    await this.$({ timeout: '30s' })`${this.binary} kill --signal INT ${name}`;
    await this.$({ timeout: '120s' })`${this.binary} wait ${name}`;
  }

  /** Starts containers (a no-op for an empty list). */
  async start(names: string[]): Promise<void> {
    if (names.length) await this.$({ timeout: '120s' })`${this.binary} start ${names}`;
  }

  /**
   * Waits until every container runs and, where it has a health check, is healthy. Fails at
   * once when one turns unhealthy or exits, and after timeoutMs otherwise.
   */
  async waitHealthy(
    names: string[],
    timeoutMs: number,
    options: { oneShot?: string[]; signal?: AbortSignal; probe?: boolean } = {},
  ): Promise<void> {
    const probes = new HealthProbes(this, Boolean(options.probe));
    try {
      await this.pollHealthy(names, timeoutMs, probes, options);
    } finally {
      probes.stop();
    }
  }

  private async pollHealthy(
    names: string[],
    timeoutMs: number,
    probes: HealthProbes,
    options: { oneShot?: string[]; signal?: AbortSignal },
  ): Promise<void> {
    const until = Date.now() + timeoutMs;
    // A one-shot container (migration, seed) that exited 0 is done, not failed, whatever its health
    // check says (often the image's, meant for another service: the check killed by its exit
    // leaves it "unhealthy"). While it runs, "unhealthy" fails like any other container's.
    const oneShot = (name: string) => Boolean(options.oneShot?.includes(name));
    const done = (name: string, state: ContainerState) =>
      oneShot(name) && state.status === 'exited' && state.exitCode === 0;
    const healthy = (name: string, state: ContainerState) =>
      state.running && (state.health === undefined || state.health === 'healthy' || probes.passed(name, state));
    for (;;) {
      options.signal?.throwIfAborted();
      // One `docker` call a poll for all of them: each call is ~25 ms of CPU, taken from the
      // containers that are starting.
      const states = (await this.inspectMany(names))
        .map((state, i) => ({ name: names[i]!, state }))
        .filter(({ name, state }) => !done(name, state));
      const bad = states.find(
        ({ state }) =>
          !state.exists ||
          state.health === 'unhealthy' ||
          (state.status !== undefined && ['exited', 'dead'].includes(state.status)),
      );
      if (bad)
        throw new CliError(
          `container '${bad.name}' is ${bad.state.exists ? (bad.state.health === 'unhealthy' ? 'unhealthy' : `${bad.state.status}${bad.state.exitCode ? ` (exit ${bad.state.exitCode})` : ''}`) : 'missing'}`,
          { advice: `See 'docker logs ${bad.name}'.` },
        );
      // A running one-shot is probed too: a service without a restart policy is most often the
      // app itself, and Docker's own verdict would count the same way, only `interval` later.
      for (const { name, state } of states) probes.start(name, state);
      if (states.every(({ name, state }) => healthy(name, state))) return;
      if (Date.now() > until) {
        const waiting = states
          .filter(({ name, state }) => !healthy(name, state))
          .map(({ name, state }) => `${name} (${state.health ?? state.status})`);
        throw new CliError(
          `containers did not become healthy within ${Math.round(timeoutMs / 1000)} s: ${waiting.join(', ')}`,
        );
      }
      // Polled often: during a deployment the writers are down while this waits. A probe that
      // passes is looked at at once (one more inspect: the container must still run).
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 200)), probes.next()]);
    }
  }

  /**
   * Runs a container's own health check command in it (at most probeTimeoutMs): `passed` is true
   * when it exits 0; `kill` stops the docker client (the check itself ends by its own timeout).
   */
  runHealthCheck(
    name: string,
    check: NonNullable<ContainerState['healthCheck']>,
  ): { passed: Promise<boolean>; kill: () => void } {
    const argv = healthCheckArgv(check.test, check.shell);
    if (!argv) return { passed: Promise.resolve(false), kill: () => {} };
    const run = this.$({
      nothrow: true,
      timeout: Math.min(check.timeoutMs, probeTimeoutMs),
    })`${this.binary} exec ${name} ${argv}`;
    return {
      passed: run.then((r) => r.exitCode === 0),
      kill: () => void run.kill('SIGKILL').catch(() => {}),
    };
  }
}

/** The longest a probe runs: a slower check is left to Docker. */
const probeTimeoutMs = 10_000;

interface Probe {
  passed: boolean;
  /** The container's start the probes are of: a restart forgets a pass. */
  startedAt: string;
  running?: { done: Promise<void>; kill: () => void };
  nextAt: number;
  delayMs: number;
}

/**
 * Docker runs a container's first health check only `interval` after its start (1 s to 30 s in
 * common files), and a deployment's writers are down until the new services are healthy. With
 * `probe`, waitHealthy runs the container's own check command itself (`docker exec`: the same
 * command, user, environment and shell) while Docker still says "starting" and has not run its
 * own check yet, and counts a pass as healthy until the container restarts or Docker has run its
 * own check (from then on only Docker's verdict counts): at once after the start, then at growing
 * intervals (each exec costs CPU the starting services need). A failed probe proves nothing:
 * Docker's own "unhealthy" still fails the wait.
 */
class HealthProbes {
  private readonly probes = new Map<string, Probe>();

  constructor(
    private readonly docker: Docker,
    private readonly enabled: boolean,
  ) {}

  /** Starts a probe of `name` if it is due: running, "starting", not yet checked by Docker, none in flight. */
  start(name: string, state: ContainerState): void {
    const check = state.healthCheck;
    if (!this.enabled || !state.running || state.health !== 'starting' || !check) return;
    let probe = this.probes.get(name);
    if (!probe || probe.startedAt !== check.startedAt) {
      probe?.running?.kill();
      probe = { passed: false, startedAt: check.startedAt, nextAt: 0, delayMs: 100 };
      this.probes.set(name, probe);
    }
    if (check.dockerHasRun || probe.passed || probe.running || Date.now() < probe.nextAt) return;
    const run = this.docker.runHealthCheck(name, check);
    const current = probe;
    current.running = {
      kill: run.kill,
      done: run.passed.then(
        (passed) => {
          current.running = undefined;
          current.passed = passed;
          current.nextAt = Date.now() + current.delayMs;
          current.delayMs = Math.min(current.delayMs * 1.5, 2000);
        },
        () => {
          current.running = undefined;
        },
      ),
    };
  }

  /** A probe passed since the container's current start, and Docker has no verdict of its own yet. */
  passed(name: string, state: ContainerState): boolean {
    const probe = this.probes.get(name);
    const check = state.healthCheck;
    return Boolean(probe?.passed && check && !check.dockerHasRun && probe.startedAt === check.startedAt);
  }

  /** Settles when a probe in flight ends; never, when none is. */
  next(): Promise<void> {
    const running = [...this.probes.values()].flatMap((p) => (p.running ? [p.running.done] : []));
    return running.length ? Promise.race(running) : new Promise(() => {});
  }

  /** Stops the probes still in flight (the wait is over). */
  stop(): void {
    for (const probe of this.probes.values()) probe.running?.kill();
  }
}
