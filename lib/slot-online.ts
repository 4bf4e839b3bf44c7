// What every slot this tool creates carries so that the next deployment can fill its successor
// while the game runs: the database's socket folder on a named volume (the successor's database
// mounts it and subscribes through it, with no network between the two) and wal_level=logical
// (a publication needs it). A slot being filled online also mounts the live slot's socket volume.
import { parse, stringify } from 'yaml';
import type { ComposeFile, ComposeService } from './compose.ts';
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

/** The socket folder on a named volume of the slot: kept when it is one, put on one when it is anonymous, a tmpfs or missing. */
function socketOnVolume(doc: ComposeFile, spec: ComposeService, service: string): string | undefined {
  const mounts = (spec.volumes ?? []).map(parseMount);
  const at = mounts.findIndex((m) => socketDirs.includes(m.target));
  if (at >= 0 && mounts[at]!.kind === 'volume') return undefined;
  const key = freshKey(doc, 'slot_socket');
  const target = at >= 0 ? mounts[at]!.target : socketDirs[0]!;
  doc.volumes = { ...(doc.volumes ?? {}), [key]: {} };
  spec.volumes = [...(spec.volumes ?? []).filter((_, i) => i !== at), `${key}:${target}`];
  return `the '${service}' socket folder ${target} is on the slot's volume '${key}' (the next deployment's database subscribes through it)`;
}

/** The server command with wal_level=logical: added to `postgres ...` or `-c ...` (or the image's default), replacing another wal_level. */
function logicalWal(spec: ComposeService, service: string): string | undefined {
  const command = spec.command;
  // Options only: the official image's entrypoint runs `postgres` with arguments that start with '-'.
  if (command === undefined || command === null) {
    spec.command = ['-c', walSetting];
    return undefined;
  }
  const argv = Array.isArray(command) ? command.map(String) : typeof command === 'string' ? command.trim().split(/\s+/) : [];
  if (argv[0] !== 'postgres' && !argv[0]?.startsWith('-')) return `the '${service}' command is not 'postgres ...' (${JSON.stringify(command)}): wal_level=logical was not added; set it in the server's configuration, or the next deployment will be offline`;
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
export function prepareOnlineSlot(doc: ComposeFile, dbService: string, liveSocketVolume: string | undefined): string[] {
  const spec = doc.services[dbService]!;
  const notes = [socketOnVolume(doc, spec, dbService), logicalWal(spec, dbService)].filter((n): n is string => Boolean(n));
  if (liveSocketVolume) {
    const key = freshKey(doc, 'live_socket');
    doc.volumes = { ...(doc.volumes ?? {}), [key]: { external: true, name: liveSocketVolume } };
    spec.volumes = [...(spec.volumes ?? []), `${key}:${liveSocketPath}`];
  }
  return notes;
}

/** The slot's compose file (compose.ts's slotComposeFile output) prepared for online deployments. */
export function onlineSlotYaml(yaml: string, dbService: string, liveSocketVolume: string | undefined): { yaml: string; notes: string[] } {
  const doc = parse(yaml) as ComposeFile;
  const notes = prepareOnlineSlot(doc, dbService, liveSocketVolume);
  // YAML 1.1 output, like compose.ts: Compose v1 reads YAML 1.1.
  return { yaml: stringify(doc, { version: '1.1' }), notes };
}
