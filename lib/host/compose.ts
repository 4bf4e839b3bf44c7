// Docker Compose, v2 (`docker compose`, what QNAP ships) or v1 (`docker-compose`), whichever the
// machine has, and what a compose file says (its services, their names and volumes).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse } from 'yaml';
import { CliError, UsageError, errorText } from '../errors.ts';
import type { Shell } from './shell.ts';
import type { Duration } from 'zx/core';

/** The compose command as argv: ['docker', 'compose'] or ['docker-compose']. */
export type ComposeCommand = string[];

/** Finds Compose: the docker CLI plugin first (v2), then docker-compose on PATH or beside docker. */
export async function detectCompose($: Shell, docker: string): Promise<ComposeCommand> {
  const v2 = await $({ nothrow: true, timeout: '30s' })`${docker} compose version`;
  if (v2.exitCode === 0) return [docker, 'compose'];
  for (const candidate of ['docker-compose', join(dirname(docker), 'docker-compose')]) {
    const v1 = await $({ nothrow: true, timeout: '30s' })`${candidate} version`;
    if (v1.exitCode === 0) return [candidate];
  }
  throw new CliError('Docker Compose was not found (neither `docker compose` nor `docker-compose`)', {
    advice: 'Install or update Container Station, which ships Docker Compose.',
  });
}

/** Runs a compose subcommand for a project; throws a CliError with compose's message on failure. */
export async function compose(
  $: Shell,
  command: ComposeCommand,
  project: string,
  file: string,
  projectDir: string,
  args: string[],
  timeout: Duration = '600s',
): Promise<string> {
  const out = await $({
    nothrow: true,
    timeout,
  })`${command} -p ${project} -f ${file} --project-directory ${projectDir} ${args}`;
  if (out.exitCode !== 0)
    throw new CliError(
      `docker compose ${args.join(' ')} (project ${project}) failed: ${out.stderr.trim().split('\n').slice(-5).join(' | ')}`,
    );
  return out.stdout;
}

export interface ComposeService {
  container_name?: string;
  ports?: unknown;
  environment?: unknown;
  restart?: string;
  volumes?: ComposeVolumeMount[];
  [key: string]: unknown;
}
/** A service's volume entry: `source:target[:mode]` or the long form. */
export type ComposeVolumeMount =
  | string
  | { type?: string; source?: string; target?: string; read_only?: boolean; [key: string]: unknown };
export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, ComposeVolumeSpec | null> | null;
  [key: string]: unknown;
}
/** A top-level named volume. */
export interface ComposeVolumeSpec {
  external?: boolean | { name?: string };
  name?: string;
  driver?: string;
  driver_opts?: Record<string, string>;
  [key: string]: unknown;
}

/**
 * The compose file parsed and checked: valid YAML, a `services` map, every service with a body.
 * Anything else is a UsageError naming the file (nothing has been started yet).
 */
export function readComposeFile(path: string): ComposeFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new UsageError(
      `cannot read the compose file ${path}: ${(error as NodeJS.ErrnoException).code ?? errorText(error)}`,
      "Point --compose-file (DOCKER_COMPOSE_FILE on the workstation) at the stack's docker-compose file.",
    );
  }
  let doc: unknown;
  try {
    // Compose resolves YAML merge keys (`<<: *db-defaults`): so must the slot's rewrite, or the
    // ports, volumes and names a service takes from an anchor would reach the slot unchanged.
    doc = parse(text, { merge: true });
  } catch (error) {
    throw new UsageError(
      `the compose file ${path} is not valid YAML: ${errorText(error).split('\n')[0]}`,
      'Fix the file (docker compose -f FILE config shows where) and deploy again.',
    );
  }
  const services = (doc as { services?: unknown } | null)?.services;
  if (!doc || typeof doc !== 'object' || !services || typeof services !== 'object' || Array.isArray(services)) {
    throw new UsageError(
      `the compose file ${path} has no services`,
      "It must be a Compose file with a `services:` map (the game's docker-compose.qnap.yml).",
    );
  }
  for (const [name, spec] of Object.entries(services as Record<string, unknown>)) {
    if (!spec || typeof spec !== 'object' || Array.isArray(spec))
      throw new UsageError(
        `the compose file ${path}: service '${name}' has no body`,
        `Give '${name}' its settings (image:, volumes: ...) or remove it.`,
      );
  }
  return doc as ComposeFile;
}

export interface ComposeServiceInfo {
  service: string;
  /** The container name operators see on the live slot. */
  canonicalName: string;
  /** Its depends_on: each service it needs, and whether it must be healthy first (`condition: service_healthy`). */
  dependsOn: Array<{ service: string; healthy: boolean }>;
}

function dependenciesOf(spec: ComposeService): Array<{ service: string; healthy: boolean }> {
  const deps = spec.depends_on;
  if (Array.isArray(deps)) return deps.map((service) => ({ service: String(service), healthy: false }));
  if (deps && typeof deps === 'object') {
    return Object.entries(deps as Record<string, { condition?: string } | null>).map(([service, how]) => ({
      service,
      healthy: how?.condition === 'service_healthy',
    }));
  }
  return [];
}

/**
 * The services of a compose file with their canonical container names, in the order Compose
 * starts them (each after what it depends on), so the deployment can start them the same way.
 */
export function readComposeServices(
  path: string,
  dbService: string,
  dbContainer: string,
  baseProject: string,
): ComposeServiceInfo[] {
  const specs = readComposeFile(path).services;
  const services = Object.keys(specs);
  if (!services.includes(dbService)) {
    throw new CliError(`the compose file ${path} has no service '${dbService}'`, {
      advice: `Name the database service with --db-service (services: ${services.join(', ')}).`,
    });
  }
  const ordered: ComposeServiceInfo[] = [];
  const visiting = new Set<string>();
  const visit = (service: string) => {
    if (ordered.some((s) => s.service === service) || !specs[service]) return;
    if (visiting.has(service))
      throw new CliError(`the compose file ${path} has a depends_on cycle through '${service}'`);
    visiting.add(service);
    const dependsOn = dependenciesOf(specs[service]!);
    for (const dep of dependsOn) visit(dep.service);
    visiting.delete(service);
    ordered.push({
      service,
      canonicalName:
        service === dbService ? dbContainer : (specs[service]!.container_name ?? `${baseProject}-${service}`),
      dependsOn,
    });
  };
  for (const service of services) visit(service);
  return ordered;
}

/** Services that run once and exit (migrations, seeds): no restart policy, or `restart: "no"`. */
export function oneShotServices(path: string): string[] {
  const specs = readComposeFile(path).services;
  return Object.keys(specs).filter((name) =>
    [undefined, 'no', false].includes(specs[name]!.restart as string | undefined),
  );
}
