// The compose file of one slot of an A-B deployment, made from the operator's file: what it changes
// (names, ports, images, bind mounts, storage) and why, and the copies of the sources it mounts.
import { cpSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { stringify } from 'yaml';
import { CliError } from '../errors.ts';
import { type ComposeFile, type ComposeService, type ComposeServiceInfo, readComposeFile } from '../host/compose.ts';
import { relativeBinds, syncRoot } from './relative-binds.ts';
import { isolateSlotStorage, type SlotStorage } from './slot-storage.ts';

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
  for (const bind of relativeBinds(doc, options.dbService)) {
    const to = `${slotDir}/${bind.path}`;
    const synced = `${syncRoot(projectDir)}/${bind.path}`;
    const from = existsSync(synced) ? synced : `${projectDir}/${bind.path}`;
    if (!copies.some((c) => c.to === to)) copies.push({ from, to });
    notes.push(
      `the '${bind.service}' service bind-mounts ${bind.source}: this slot mounts its own copy ${to} (of ${from}${from === synced ? ', what deploy-to-qnap synced from the workstation' : ''}), so the live slot's files do not change before the switch`,
    );
    const volumes = doc.services[bind.service]!.volumes!;
    const entry = volumes[bind.index]!;
    volumes[bind.index] =
      typeof entry === 'string' ? `${to}:${bind.target}${bind.readOnly ? ':ro' : ''}` : { ...entry, source: to };
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
