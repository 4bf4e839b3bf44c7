// Talking to the Docker engine: what state a container is in, and argv for `docker exec`.
import { CliError } from './errors.ts';
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
}

/** The docker CLI at a known path, run through the given shell. */
export class Docker {
  constructor(
    readonly binary: string,
    private readonly $: Shell,
  ) {}

  /** The state of a container by name; exists=false when there is none. */
  async inspect(container: string): Promise<ContainerState> {
    const out = await this.$({ timeout: '30s', nothrow: true })`${this.binary} container inspect --format ${'{{json .}}'} ${container}`;
    if (out.exitCode !== 0) {
      if (/no such (container|object)/i.test(out.stderr)) {
        return { exists: false, running: false, status: undefined, health: undefined, image: undefined, imageId: undefined };
      }
      if (/cannot connect|daemon|permission denied/i.test(out.stderr)) {
        throw new CliError(`the Docker daemon does not answer (${this.binary}): ${out.stderr.trim()}`, {
          advice: 'Start Container Station (or dockerd), and run as a user allowed to use Docker.',
        });
      }
      throw new CliError(`docker container inspect ${container} failed: ${out.stderr.trim()}`);
    }
    const info = JSON.parse(out.stdout) as {
      State: { Status: string; Running: boolean; Health?: { Status: string } };
      Config: { Image: string };
      Image: string;
    };
    return {
      exists: true,
      running: info.State.Running,
      status: info.State.Status,
      health: info.State.Health?.Status,
      image: info.Config.Image,
      imageId: info.Image,
    };
  }

  /** argv (without the docker binary) for running a command in a container. */
  execArgs(container: string, command: string[], options: { stdin?: boolean; user?: string } = {}): string[] {
    return ['exec', ...(options.stdin ? ['-i'] : []), ...(options.user ? ['-u', options.user] : []), container, ...command];
  }
}
