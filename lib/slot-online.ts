// What every slot this tool creates carries so that the next deployment can fill its successor
// while the game runs: the database's socket folder on a named volume (the successor's database
// mounts it and subscribes through it, with no network between the two) and wal_level=logical
// (a publication needs it). A slot being filled online also mounts the live slot's socket volume.
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

/** The socket folder on a named volume of the slot: kept when it is one, added when the service has none. */
function socketOnVolume(doc: ComposeFile, spec: ComposeService, service: string): string | undefined {
  const socket = (spec.volumes ?? []).map(parseMount).find((m) => socketDirs.includes(m.target));
  if (socket?.kind === 'volume') return undefined;
  if (socket) return `the '${service}' socket folder is ${socket.kind === 'tmpfs' ? 'a tmpfs' : 'an anonymous volume'} (${socket.text}): the next deployment cannot reach this slot's database and will be offline`;
  const key = freshKey(doc, 'slot_socket');
  doc.volumes = { ...(doc.volumes ?? {}), [key]: {} };
  spec.volumes = [...(spec.volumes ?? []), `${key}:${socketDirs[0]}`];
  return `the '${service}' socket folder ${socketDirs[0]} is on the slot's volume '${key}' (the next deployment subscribes through it)`;
}

/** The server command with wal_level=logical: added to `postgres ...` (or the image's default), replacing another wal_level. */
function logicalWal(spec: ComposeService, service: string): string | undefined {
  const command = spec.command;
  if (command === undefined || command === null) {
    spec.command = ['postgres', '-c', walSetting];
    return undefined;
  }
  const argv = Array.isArray(command) ? command.map(String) : typeof command === 'string' ? command.trim().split(/\s+/) : [];
  if (argv[0] !== 'postgres') return `the '${service}' command is not 'postgres ...' (${JSON.stringify(command)}): wal_level=logical was not added; set it in the server's configuration, or the next deployment will be offline`;
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
