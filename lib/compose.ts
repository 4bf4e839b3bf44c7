// Docker Compose, v2 (`docker compose`, what QNAP ships) or v1 (`docker-compose`), whichever the
// machine has, plus the per-slot compose file the A-B deployment starts each slot from.
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { CliError, UsageError, errorText } from './errors.ts';
import { insideComposeDir, syncRoot } from './deploy-sync.ts';
import { isolateSlotStorage, parseMount, type SlotStorage } from './slot-storage.ts';
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
    doc = parse(text);
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

/** What the slot's compose file changes of the operator's file, to run beside the live slot. */
export interface SlotFileOptions {
  dbService: string;
  slotId: string;
  names: Array<Pick<ComposeServiceInfo, 'service' | 'canonicalName'>>;
  /** The NAS dir (Compose's project directory: relative paths of the file are against it). */
  projectDir?: string;
  /** The slot's own folder, for its copies of the relative bind mounts. */
  slotDir?: string;
  /** Images built for the services with `build:` (deploy-to-qnap on the workstation): service -> tag. */
  images?: Record<string, string>;
}

/** A copy the slot makes of a relative bind mount's source before it starts. */
export interface SlotCopy {
  from: string;
  to: string;
}

const portList = (ports: unknown) =>
  Array.isArray(ports)
    ? ports.map((p) => (typeof p === 'object' && p ? JSON.stringify(p) : String(p))).join(', ')
    : String(ports);
const unbound = (spec: ComposeService) =>
  ['none', 'host'].includes(String(spec.network_mode))
    ? ` (under network_mode: ${String(spec.network_mode)} Docker binds none of them anyway)`
    : '';

/**
 * Published ports: the new database runs beside the live one until the release, so it publishes
 * none (the live one holds them); writers keep theirs, since they start only once the live
 * writers have stopped and freed them.
 */
function slotPorts(service: string, spec: ComposeService, dbService: string): string | undefined {
  if (!spec.ports) return undefined;
  const ports = portList(spec.ports);
  if (service !== dbService) {
    return `the '${service}' service publishes ${ports}: kept; its new container starts only after the live writers stop, so they are free then (unreachable from that stop until it is healthy)${unbound(spec)}`;
  }
  delete spec.ports;
  return `the '${service}' service publishes ${ports}: the new database does not (it runs beside the live one, which holds them, until the release), nor after the switch (Docker cannot add a port to a running container, and recreating the database would stop the game a second time); reach it with docker exec${unbound(spec)}`;
}

/** build: replaced by the image the workstation built for this NAS (tagged by its content). */
function slotImage(service: string, spec: ComposeService, images: Record<string, string>): string | undefined {
  if (!spec.build || spec.image) return undefined;
  const tag = images[service];
  const build =
    typeof spec.build === 'string'
      ? `context ${spec.build}`
      : Object.entries(spec.build as Record<string, unknown>)
          .filter(([k]) => k !== 'args')
          .map(([k, v]) => `${k} ${String(v)}`)
          .join(', ');
  if (!tag)
    return `the '${service}' service builds (${build}) and no image was given: Compose builds it here when the slot is created (deploy-to-qnap from the workstation ships a content-tagged image instead)`;
  delete spec.build;
  spec.image = tag;
  return `the '${service}' service builds (${build}): this slot runs the image ${tag} instead (built for this NAS, tagged by its content)`;
}

/** Relative bind mounts point at the slot's own copy: the live slot's mounted code never changes before the switch. */
function slotBinds(doc: ComposeFile, options: SlotFileOptions, copies: SlotCopy[]): string[] {
  const notes: string[] = [];
  const { projectDir, slotDir } = options;
  if (!projectDir || !slotDir) return notes;
  for (const [service, spec] of Object.entries(doc.services)) {
    // The database's mounts are storage, never code to copy: a copy of a running server's files is
    // no cluster at all. slot-storage.ts isolates them or refuses.
    if (service === options.dbService) continue;
    spec.volumes = (spec.volumes ?? []).map((entry) => {
      const mount = parseMount(entry);
      if (mount.kind !== 'bind' || !mount.source?.startsWith('.')) return entry;
      const path = insideComposeDir(mount.source, `the '${service}' service's bind mount`);
      const to = `${slotDir}/${path}`;
      const synced = `${syncRoot(projectDir)}/${path}`;
      const from = existsSync(synced) ? synced : `${projectDir}/${path}`;
      if (!copies.some((c) => c.to === to)) copies.push({ from, to });
      notes.push(
        `the '${service}' service bind-mounts ${mount.source}: this slot mounts its own copy ${to} (of ${from}${from === synced ? ', what deploy-to-qnap synced from the workstation' : ''}), so the live slot's files do not change before the switch`,
      );
      return typeof entry === 'string'
        ? `${to}:${mount.target}${mount.readOnly ? ':ro' : ''}`
        : { ...entry, source: to };
    });
  }
  return notes;
}

/**
 * The compose file of one slot: every container gets a slot-suffixed name (two slots run side by
 * side until the switch renames them), the database publishes no ports (the live one holds them),
 * services that build run the images built for them, relative bind mounts point at the slot's own
 * copy, and its database service mounts only storage the slot owns (slot-storage.ts). `warnings`
 * are the storage notes; `deviations` every other change to the file, with its reason.
 */
export function slotComposeFile(
  basePath: string,
  options: SlotFileOptions,
): { yaml: string; deviations: string[]; copies: SlotCopy[] } & SlotStorage {
  const doc = readComposeFile(basePath);
  const deviations: string[] = [];
  const copies: SlotCopy[] = [];
  for (const { service, canonicalName } of options.names) {
    const spec = doc.services[service]!;
    spec.container_name = `${canonicalName}-${options.slotId}`;
    const portNote = slotPorts(service, spec, options.dbService);
    if (portNote) deviations.push(portNote);
    const imageNote = slotImage(service, spec, options.images ?? {});
    if (imageNote) deviations.push(imageNote);
  }
  deviations.push(...slotBinds(doc, options, copies));
  const storage = isolateSlotStorage(doc, options.dbService, options.slotId);
  // YAML 1.1 output: Compose v1 reads YAML 1.1, where an unquoted off or yes is a boolean.
  return {
    yaml: stringify(doc, { version: '1.1' }),
    warnings: storage.warnings,
    folders: storage.folders,
    deviations,
    copies,
  };
}

/** Makes the slot's copies of its relative bind mounts (modes and links kept); the source must exist. */
export function copySlotSources(copies: SlotCopy[]): void {
  for (const { from, to } of copies) {
    if (!existsSync(from))
      throw new CliError(`the bind-mounted source ${from} does not exist on the NAS`, {
        advice:
          'Deploy from the workstation (it syncs the sources), or put the folder there. The live deployment was not touched.',
      });
    mkdirSync(dirname(to), { recursive: true, mode: 0o700 });
    cpSync(from, to, {
      recursive: true,
      preserveTimestamps: true,
      verbatimSymlinks: true,
      errorOnExist: true,
      force: false,
    });
  }
}

/** Services that run once and exit (migrations, seeds): no restart policy, or `restart: "no"`. */
export function oneShotServices(path: string): string[] {
  const specs = readComposeFile(path).services;
  return Object.keys(specs).filter((name) =>
    [undefined, 'no', false].includes(specs[name]!.restart as string | undefined),
  );
}
