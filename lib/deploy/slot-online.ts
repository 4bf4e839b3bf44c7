// What every slot this tool creates carries so that the next deployment can fill its successor
// while the game runs: the database's socket folder on a named volume (the successor's database
// mounts it and subscribes through it, with no network between the two) and wal_level=logical
// (a publication needs it). A slot being filled online also mounts the live slot's socket volume.
import { parse, stringify } from 'yaml';
import type { ComposeFile, ComposeService } from '../host/compose.ts';
import { CliError } from '../errors.ts';
import type { Shell } from '../host/shell.ts';
import { parseMount } from './slot-storage.ts';

/** Where a new slot's database sees the live slot's socket folder. */
export const liveSocketPath = '/var/run/postgresql-live';
export const socketDirs = ['/var/run/postgresql', '/run/postgresql'];
const walSetting = 'wal_level=logical';

/** A top-level volume key not yet in the file. */
function freshKey(doc: ComposeFile, base: string): string {
  const taken = new Set(Object.keys(doc.volumes ?? {}));
  let key = base;
  for (let i = 2; taken.has(key); i++) key = `${base}${i}`;
  return key;
}

/** The label of the socket volumes this tool creates (its value: the slot's compose project). */
export const socketVolumeLabel = 'planetarion-backup.socket-of';
/** The slot's own socket volume: created by the tool, external in the slot's file. */
export const socketVolumeName = (project: string) => `${project}_dbsocket`;

/**
 * The socket folder on a volume the tool creates for the slot and the file names as external:
 * the next slot's database mounts it, so Compose must never remove it with this slot (a volume
 * in use fails `down -v` and would leave the slot's data folder behind); sweepSocketVolumes
 * removes it once no container uses it. A socket folder on a NAS folder (driver_opts) stays.
 */
function socketOnVolume(doc: ComposeFile, spec: ComposeService, service: string, project: string): string | undefined {
  const mounts = (spec.volumes ?? []).map(parseMount);
  const at = mounts.findIndex((m) => socketDirs.includes(m.target));
  const mount = at >= 0 ? mounts[at] : undefined;
  const own = { external: true, name: socketVolumeName(project) };
  if (mount?.kind === 'volume' && mount.source) {
    const volume = doc.volumes?.[mount.source];
    if (volume && (volume.driver_opts || volume.external)) return undefined;
    doc.volumes = { ...(doc.volumes ?? {}), [mount.source]: own };
    return undefined;
  }
  const key = freshKey(doc, 'slot_socket');
  const target = mount ? mount.target : socketDirs[0]!;
  doc.volumes = { ...(doc.volumes ?? {}), [key]: own };
  spec.volumes = [...(spec.volumes ?? []).filter((_, i) => i !== at), `${key}:${target}`];
  return `the '${service}' socket folder ${target} is on the slot's volume ${own.name} (the next deployment's database subscribes through it)`;
}

/** The server command with wal_level=logical: added to `postgres ...` or `-c ...` (or the image's default), replacing another wal_level. */
function logicalWal(spec: ComposeService, service: string): string | undefined {
  const command = spec.command;
  // Options only: the official image's entrypoint runs `postgres` with arguments that start with '-'.
  if (command === undefined || command === null) {
    spec.command = ['-c', walSetting];
    return undefined;
  }
  const argv = Array.isArray(command)
    ? command.map(String)
    : typeof command === 'string'
      ? command.trim().split(/\s+/)
      : [];
  if (argv[0] !== 'postgres' && !argv[0]?.startsWith('-'))
    return `the '${service}' command is not 'postgres ...' (${JSON.stringify(command)}): wal_level=logical was not added; set it in the server's configuration, or the next deployment will be offline`;
  const at = argv.findIndex((arg) => /^wal_level=/.test(arg));
  if (at >= 0) argv[at] = walSetting;
  else argv.push('-c', walSetting);
  spec.command = argv;
  return undefined;
}

/**
 * Rewrites the slot's database service for online deployments (after isolateSlotStorage gave it
 * storage of its own): socket folder on a named volume, wal_level=logical, and, when this slot is
 * filled online, the live slot's socket volume mounted at liveSocketPath (external: the live slot
 * owns it, so removing this slot never removes it). Returns notes for the plan.
 */
export function prepareOnlineSlot(
  doc: ComposeFile,
  dbService: string,
  project: string,
  liveSocketVolume: string | undefined,
): string[] {
  const spec = doc.services[dbService]!;
  const notes = [socketOnVolume(doc, spec, dbService, project), logicalWal(spec, dbService)].filter((n): n is string =>
    Boolean(n),
  );
  if (liveSocketVolume) {
    const key = freshKey(doc, 'live_socket');
    doc.volumes = { ...(doc.volumes ?? {}), [key]: { external: true, name: liveSocketVolume } };
    spec.volumes = [...(spec.volumes ?? []), `${key}:${liveSocketPath}`];
  }
  return notes;
}

/** The slot's compose file (slot-compose.ts's slotComposeFile output) prepared for online deployments. */
export function onlineSlotYaml(
  yaml: string,
  dbService: string,
  project: string,
  liveSocketVolume: string | undefined,
): { yaml: string; notes: string[] } {
  const doc = parse(yaml) as ComposeFile;
  const notes = prepareOnlineSlot(doc, dbService, project, liveSocketVolume);
  // YAML 1.1 output, like slot-compose.ts: Compose v1 reads YAML 1.1.
  return { yaml: stringify(doc, { version: '1.1' }), notes };
}

/** Creates the slot's socket volume (labelled, so that sweepSocketVolumes finds it) if its file names one. */
export async function createSocketVolume($: Shell, docker: string, yaml: string, project: string): Promise<void> {
  const name = socketVolumeName(project);
  if (!yaml.includes(name)) return;
  const out = await $({
    nothrow: true,
    timeout: '60s',
  })`${docker} volume create --label ${`${socketVolumeLabel}=${project}`} ${name}`;
  if (out.exitCode !== 0) throw new CliError(`docker volume create ${name} failed: ${out.stderr.trim()}`);
}

/** Removes the socket volumes of this tool's slots (projects starting with `base`) that no container uses any more; never throws. */
export async function sweepSocketVolumes($: Shell, docker: string, base: string): Promise<void> {
  const out = await $({
    nothrow: true,
    timeout: '60s',
  })`${docker} volume ls -q --filter ${`label=${socketVolumeLabel}`}`;
  const names = out.stdout.split('\n').filter((name) => name.startsWith(`${base}-`));
  // A volume a container (running or stopped) still mounts is refused by Docker: that is the check.
  for (const name of names) await $({ nothrow: true, timeout: '60s' })`${docker} volume rm ${name}`;
}
