// The images of the services a compose file builds (`build:` and no `image:`), made without manual
// steps: tagged by their content (the build context's files, the Dockerfile, target, build args,
// platform), built on the workstation for the NAS's architecture and shipped with
// `docker save | ssh docker load` (nothing travels when the NAS has the tag), or, with
// --build-on-nas, built there from the synced context. The slot's compose file then runs those
// tags instead of building (deploy/slot-compose.ts).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { baseProjectName } from '../deploy/live.ts';
import { localManifest, treeHash } from './sync.ts';
import { insideComposeDir, syncRoot } from '../deploy/relative-binds.ts';
import { contentTag } from '../deploy/service-images.ts';
import { CliError, UsageError } from '../errors.ts';
import { remoteDocker, shipImage, type ImageShipment } from './upload.ts';
import type { ComposeFile } from '../host/compose.ts';
import type { Ssh } from './ssh.ts';

/** One service's build, as the compose file says it. */
export interface BuildSpec {
  service: string;
  /** The context inside the compose folder (`src`). */
  context: string;
  /** The Dockerfile relative to the context, as Compose reads it (default `Dockerfile`). */
  dockerfile: string;
  target: string | undefined;
  args: Record<string, string>;
}

/** A build with the tag of its content: the NAS's name, and the workstation's name for its local build. */
export interface TaggedBuild extends BuildSpec {
  tag: string;
  localTag: string;
  platform: string;
}

/** Docker platforms by `uname -m`. */
const platformByMachine: Record<string, string> = {
  x86_64: 'linux/amd64',
  amd64: 'linux/amd64',
  aarch64: 'linux/arm64',
  arm64: 'linux/arm64',
};

function buildArgsOf(raw: unknown, service: string): Record<string, string> {
  if (!raw) return {};
  const entries = Array.isArray(raw)
    ? raw.map((e) => String(e).split(/=(.*)/s).slice(0, 2) as [string, string | undefined])
    : Object.entries(raw as Record<string, unknown>).map(
        ([k, v]) => [k, v === null || v === undefined ? undefined : String(v)] as const,
      );
  const args: Record<string, string> = {};
  for (const [key, value] of entries) {
    if (value === undefined)
      throw new UsageError(
        `the '${service}' service's build arg '${key}' has no value (Compose would take it from the environment of the machine that builds)`,
        `Write its value in the compose file (args: ${key}: VALUE). Nothing was changed.`,
      );
    args[key] = value;
  }
  return args;
}

/** The services that build (`build:` and no `image:`), with their context inside the compose folder. */
export function buildSpecs(doc: ComposeFile): BuildSpec[] {
  const specs: BuildSpec[] = [];
  for (const [service, spec] of Object.entries(doc.services)) {
    if (!spec.build || spec.image) continue;
    const build =
      typeof spec.build === 'string'
        ? { context: spec.build }
        : (spec.build as { context?: string; dockerfile?: string; target?: string; args?: unknown });
    specs.push({
      service,
      context: insideComposeDir(build.context ?? '.', `the '${service}' service's build context`),
      dockerfile: build.dockerfile ?? 'Dockerfile',
      target: build.target,
      args: buildArgsOf(build.args, service),
    });
  }
  return specs;
}

/** The Dockerfile's path inside the compose folder; a UsageError when it is outside the context (the NAS would not have it). */
function dockerfileIn(build: BuildSpec): string {
  const path = posix.normalize(posix.join(build.context, build.dockerfile));
  if (build.context !== '.' && !path.startsWith(`${build.context}/`)) {
    throw new UsageError(
      `the '${build.service}' service's Dockerfile ${build.dockerfile} is outside its build context ${build.context}`,
      'Keep the Dockerfile inside the context (the NAS gets the context, not the rest of the folder). Nothing was changed.',
    );
  }
  return path;
}

/** Tags every build by its content, for the NAS's platform (from `uname -m`). */
export function tagBuilds(doc: ComposeFile, composeDir: string, projectDir: string, machine: string): TaggedBuild[] {
  const platform = platformByMachine[machine] ?? `linux/${machine}`;
  const base = baseProjectName(projectDir);
  return buildSpecs(doc).map((build) => {
    const dockerfile = dockerfileIn(build);
    if (!existsSync(join(composeDir, dockerfile)))
      throw new UsageError(
        `the '${build.service}' service's Dockerfile ${join(composeDir, dockerfile)} does not exist`,
        'Fix build.dockerfile (relative to build.context) and deploy again. Nothing was changed.',
      );
    const hash = createHash('sha256')
      .update(treeHash(localManifest(composeDir, [build.context])))
      .update(
        `\0${dockerfile}\0${readFileSync(join(composeDir, dockerfile), 'utf8')}\0${build.target ?? ''}\0${platform}\0`,
      )
      .update(JSON.stringify(Object.entries(build.args).sort(([a], [b]) => a.localeCompare(b))))
      .digest('hex')
      .slice(0, 16);
    const repo = `${base}-${build.service}`.toLowerCase().replace(/[^a-z0-9_.-]/g, '');
    return { ...build, platform, tag: contentTag(repo, hash), localTag: `${repo}:build-c${hash}` };
  });
}

/** `docker build` arguments for one build: the Dockerfile, target and args, then the context. */
function buildArgv(build: TaggedBuild, tag: string, dockerfile: string, context: string, platform: boolean): string[] {
  return [
    'build',
    ...(platform ? ['--platform', build.platform] : []),
    '-t',
    tag,
    '-f',
    dockerfile,
    ...(build.target ? ['--target', build.target] : []),
    ...Object.entries(build.args).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
    context,
  ];
}

/** Runs a local command, keeping the tail of its output for the error. */
function runLocal(command: string, args: string[]): Promise<{ code: number; tail: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (d: Buffer) => (out = (out + d.toString('utf8')).slice(-4000));
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (error) => resolvePromise({ code: 127, tail: error.message }));
    child.on('close', (code) =>
      resolvePromise({ code: code ?? 1, tail: out.trim().split('\n').slice(-5).join(' | ') }),
    );
  });
}

export interface ImageOutcome {
  service: string;
  tag: string;
  built: 'here' | 'on the NAS' | 'already';
  shipment: ImageShipment | undefined;
}

/** Builds a service's image on the workstation (unless its content tag is there) and ships it to the NAS (unless it has it). */
export async function buildAndShip(
  ssh: Ssh,
  build: TaggedBuild,
  composeDir: string,
  docker: string,
): Promise<ImageOutcome> {
  const present = (await runLocal(docker, ['image', 'inspect', '--format', '{{.Id}}', build.localTag])).code === 0;
  if (!present) {
    const built = await runLocal(
      docker,
      buildArgv(build, build.localTag, join(composeDir, dockerfileIn(build)), join(composeDir, build.context), true),
    );
    if (built.code !== 0)
      throw new CliError(`building the '${build.service}' image here failed (exit ${built.code}): ${built.tail}`, {
        advice:
          'Fix the build (docker build with the same arguments shows it) and deploy again. Nothing was changed on the NAS.',
      });
  }
  const shipment = await shipImage(ssh, build.localTag, { docker, as: build.tag });
  return { service: build.service, tag: build.tag, built: present ? 'already' : 'here', shipment };
}

/** --build-on-nas: builds the image on the NAS from the synced context, unless the NAS has its content tag. */
export async function buildOnNas(ssh: Ssh, build: TaggedBuild, projectDir: string): Promise<ImageOutcome> {
  const has = await ssh.run(remoteDocker(['image', 'inspect', '--format', '{{.Id}}', build.tag]));
  if (has.exitCode === 0) return { service: build.service, tag: build.tag, built: 'already', shipment: undefined };
  const root = syncRoot(projectDir);
  const built = await ssh.run(
    remoteDocker(buildArgv(build, build.tag, `${root}/${dockerfileIn(build)}`, `${root}/${build.context}`, false)),
    { timeoutMs: 3_600_000 },
  );
  if (built.exitCode !== 0) {
    throw new CliError(
      `building the '${build.service}' image on the NAS failed (exit ${built.exitCode}): ${`${built.stderr}\n${built.stdout}`.trim().split('\n').slice(-5).join(' | ')}`,
      {
        advice:
          'Fix the build, or build on the workstation (without --build-on-nas). The live deployment was not touched.',
      },
    );
  }
  return { service: build.service, tag: build.tag, built: 'on the NAS', shipment: undefined };
}

/** The NAS-side flag value: `service=tag,...`. */
export const serviceImagesArg = (outcomes: ImageOutcome[]) => outcomes.map((o) => `${o.service}=${o.tag}`).join(',');
