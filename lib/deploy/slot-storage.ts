// The storage of a slot's database service: only what the slot owns. Two PostgreSQL servers on
// one data dir destroy it, and a restore's DROP DATABASE on a shared one drops the live data; so
// every stateful mount of the live file (data dir, its parent, the socket folder) is replaced by
// one of the slot's own, and a layout that cannot be given its own copy is refused before
// anything starts.
import { UsageError } from '../errors.ts';
import type { ComposeFile, ComposeVolumeMount, ComposeVolumeSpec } from '../host/compose.ts';

const pgData = '/var/lib/postgresql/data';
const socketDirs = ['/var/run/postgresql', '/run/postgresql'];

type Role = 'data' | 'socket' | 'inside-data';

interface Mount {
  kind: 'anonymous' | 'tmpfs' | 'bind' | 'volume';
  source: string | undefined;
  target: string;
  readOnly: boolean;
  /** The entry as written, for messages. */
  text: string;
}

export interface SlotStorage {
  warnings: string[];
  /** Folders on the NAS the slot's volumes bind (created 0700 before the slot starts, removed with it). */
  folders: string[];
}

/** Splits a short-syntax mount at its colons, except those inside ${...} (a default value). */
function splitShort(entry: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (let i = 0; i < entry.length; i++) {
    const ch = entry[i]!;
    if (ch === '$' && entry[i + 1] === '{') depth++;
    else if (ch === '}' && depth > 0) depth--;
    if (ch === ':' && depth === 0) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  parts.push(current);
  return parts;
}

const looksLikePath = (source: string) => /^[./~]/.test(source) || source.includes('$');
const trimSlash = (path: string) => (path.length > 1 ? path.replace(/\/+$/, '') : path);

/** One volume entry of a service, in either syntax. */
export function parseMount(entry: ComposeVolumeMount): Mount {
  if (typeof entry === 'string') {
    const parts = splitShort(entry);
    if (parts.length === 1)
      return { kind: 'anonymous', source: undefined, target: trimSlash(parts[0]!), readOnly: false, text: entry };
    const [source, target, mode] = parts as [string, string, string | undefined];
    return {
      kind: looksLikePath(source) ? 'bind' : 'volume',
      source,
      target: trimSlash(target),
      readOnly: (mode ?? '').split(',').includes('ro'),
      text: entry,
    };
  }
  const target = trimSlash(String(entry.target ?? ''));
  const text = `${entry.source ?? ''}:${target} (type: ${entry.type ?? 'volume'})`;
  const readOnly = entry.read_only === true;
  if (entry.type === 'tmpfs') return { kind: 'tmpfs', source: undefined, target, readOnly, text };
  if (!entry.source) return { kind: 'anonymous', source: undefined, target, readOnly, text };
  return {
    kind: entry.type === 'bind' || looksLikePath(entry.source) ? 'bind' : 'volume',
    source: entry.source,
    target,
    readOnly,
    text,
  };
}

/** What a mount target holds for PostgreSQL: its data (or a parent of it), its socket, or a part of the data dir. */
export function mountRole(target: string, dataDirs: string[]): Role | undefined {
  if (socketDirs.includes(target)) return 'socket';
  if (dataDirs.some((dir) => dir === target || dir.startsWith(`${target}/`))) return 'data';
  if (dataDirs.some((dir) => target.startsWith(`${dir}/`))) return 'inside-data';
  return undefined;
}

/** The PGDATA a service sets in its environment (list or map form), if any. */
function pgdataOf(environment: unknown): string | undefined {
  if (Array.isArray(environment)) {
    const entry = environment.map(String).find((e) => e.startsWith('PGDATA='));
    return entry?.slice('PGDATA='.length);
  }
  if (environment && typeof environment === 'object') {
    const value = (environment as Record<string, unknown>).PGDATA;
    return value === undefined || value === null ? undefined : String(value);
  }
  return undefined;
}

const refuse = (service: string, mount: Mount, why: string, fix: string): never => {
  throw new UsageError(
    `the '${service}' service mounts ${mount.text}: ${why}; a new slot cannot get storage of its own for it`,
    `${fix} Nothing was started.`,
  );
};

/** A top-level volume key not yet in the file, for a replacement the slot owns. */
function freshKey(doc: ComposeFile, base: string): string {
  const taken = new Set(Object.keys(doc.volumes ?? {}));
  let key = base;
  for (let i = 2; taken.has(key); i++) key = `${base}${i}`;
  return key;
}

/**
 * Rewrites `doc` so the database service mounts only what the slot owns: a named volume bound to
 * a NAS folder by driver_opts gets a sibling folder `<device>-<slotId>`; a bind mount (a path,
 * `~` or `${VAR}` source) and an external or fixed-name volume get a fresh volume of the slot;
 * other services mounting the same socket folder follow it. Throws a UsageError for what cannot
 * be isolated (a writable mount inside the data dir, a volume plugin, volumes_from).
 */
export function isolateSlotStorage(doc: ComposeFile, dbService: string, slotId: string): SlotStorage {
  const spec = doc.services[dbService]!;
  const storage: SlotStorage = { warnings: [], folders: [] };
  if (spec.volumes_from)
    throw new UsageError(
      `the '${dbService}' service uses volumes_from; a new slot would share those volumes with the live one`,
      'Give it volumes of its own (volumes:). Nothing was started.',
    );
  const dataDirs = [pgData, ...[pgdataOf(spec.environment)].filter((d): d is string => Boolean(d)).map(trimSlash)];
  const replaced = new Map<string, string>();
  spec.volumes = (spec.volumes ?? []).map((entry) => {
    const mount = parseMount(entry);
    const role = mountRole(mount.target, dataDirs);
    if (!role || mount.kind === 'anonymous' || mount.kind === 'tmpfs') return entry;
    if (role === 'inside-data') {
      if (mount.readOnly) return entry;
      return refuse(
        dbService,
        mount,
        `it is inside the data dir (${dataDirs.join(', ')}) and writable`,
        'Mount it read-only (:ro), or move it out of the data dir.',
      );
    }
    const owned = ownedMount(doc, dbService, mount, role, slotId, storage);
    if (owned === undefined) return entry;
    replaced.set(mount.source!, owned);
    return `${owned}:${mount.target}${mount.readOnly ? ':ro' : ''}`;
  });
  followReplacedSockets(doc, dbService, replaced);
  return storage;
}

/** The volume key the slot mounts instead of `mount`, or undefined when the mount is already the slot's own. */
function ownedMount(
  doc: ComposeFile,
  service: string,
  mount: Mount,
  role: Role,
  slotId: string,
  storage: SlotStorage,
): string | undefined {
  const what = role === 'socket' ? 'socket folder' : 'data dir';
  if (mount.kind === 'bind') {
    const key = freshKey(doc, role === 'socket' ? 'slot_socket' : 'slot_pgdata');
    doc.volumes = { ...(doc.volumes ?? {}), [key]: {} };
    storage.warnings.push(
      `the '${service}' ${what} is a bind mount (${mount.source}); each slot gets its own volume '${key}' instead`,
    );
    return key;
  }
  const name = mount.source!;
  const volume: ComposeVolumeSpec = doc.volumes?.[name] ?? {};
  if (volume.external || volume.name) {
    const key = freshKey(doc, `${name}_slot`);
    doc.volumes = { ...(doc.volumes ?? {}), [key]: {} };
    storage.warnings.push(
      `the '${service}' ${what} is the ${volume.external ? 'external' : `fixed-name ('${volume.name}')`} volume '${name}', shared by every project; each slot gets its own volume '${key}' instead`,
    );
    return key;
  }
  const opts = volume.driver_opts;
  if (opts) {
    const device = opts.device ?? '';
    const binds = String(opts.o ?? '')
      .split(',')
      .includes('bind');
    if (!binds)
      return refuse(
        service,
        mount,
        `volume '${name}' has driver_opts (${Object.entries(opts)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')}) that are not a local bind`,
        'Use a plain named volume or a driver_opts bind (type: none, o: bind, device: /share/...).',
      );
    if (!device.startsWith('/'))
      return refuse(
        service,
        mount,
        `volume '${name}' binds '${device}', not an absolute folder`,
        'Write the device as an absolute path (/share/...).',
      );
    const sibling = `${trimSlash(device)}-${slotId}`;
    doc.volumes![name] = { ...volume, driver_opts: { ...opts, device: sibling } };
    storage.folders.push(sibling);
    storage.warnings.push(
      `the '${service}' ${what} volume '${name}' binds ${device}; this slot binds its own folder ${sibling} (created 0700)`,
    );
    return undefined;
  }
  if (volume.driver && volume.driver !== 'local')
    return refuse(
      service,
      mount,
      `volume '${name}' uses the driver '${volume.driver}'`,
      'Use a local named volume or a driver_opts bind folder.',
    );
  return undefined;
}

/** Services that mounted a replaced source (the app sharing the database's socket folder) mount the slot's one. */
function followReplacedSockets(doc: ComposeFile, dbService: string, replaced: Map<string, string>): void {
  if (!replaced.size) return;
  for (const [name, spec] of Object.entries(doc.services)) {
    if (name === dbService || !spec.volumes) continue;
    spec.volumes = spec.volumes.map((entry) => {
      const mount = parseMount(entry);
      const key = mount.source === undefined ? undefined : replaced.get(mount.source);
      return key ? `${key}:${mount.target}${mount.readOnly ? ':ro' : ''}` : entry;
    });
  }
}
