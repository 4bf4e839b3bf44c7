// The last check before the new slot's database server starts: what Docker will really mount
// into it, compared with what the live database container mounts. The compose file is rewritten
// so the slot owns its storage (slot-storage.ts), but a data dir the file does not show (PGDATA
// from an env_file, a `-D` in the command, an image's VOLUME) would still be shared, and a second
// server on the live data files (its postmaster.pid names PID 1, which looks stale in another
// container) would run recovery on them while the live one writes. So the created, not yet
// started, container is inspected: a writable mount that reaches the storage holding the live
// server's data dir is refused (exit 2) before anything starts.
import { UsageError } from '../errors.ts';
import { adminSql, type RestoreTarget } from '../restore/attempt.ts';
import type { Shell } from '../host/shell.ts';

interface DockerMount {
  Type: string;
  Name?: string;
  Source: string;
  Destination: string;
  RW: boolean;
}

/** Where a mount's data lives: a host path (a bind, or a volume bound to a folder by driver_opts), or a volume. */
export interface StorageRef {
  path: string | undefined;
  volume: string | undefined;
  destination: string;
  writable: boolean;
}

async function mountsOf($: Shell, docker: string, container: string): Promise<DockerMount[]> {
  const out = await $({ timeout: '30s' })`${docker} container inspect --format ${'{{json .Mounts}}'} ${container}`;
  return (JSON.parse(out.stdout.trim() || '[]') as DockerMount[] | null) ?? [];
}

/** A volume's bind folder (driver_opts `o: bind`, `device: ...`), if it has one. */
async function boundFolder($: Shell, docker: string, volume: string): Promise<string | undefined> {
  const out = await $({
    timeout: '30s',
    nothrow: true,
  })`${docker} volume inspect --format ${'{{json .Options}}'} ${volume}`;
  const options = (JSON.parse(out.stdout.trim() || 'null') as Record<string, string> | null) ?? {};
  return options.device && /(^|,)r?bind(,|$)/.test(options.o ?? '') ? options.device : undefined;
}

/** The storage behind each of a container's mounts (tmpfs has none). */
export async function storageOf($: Shell, docker: string, container: string): Promise<StorageRef[]> {
  const refs: StorageRef[] = [];
  for (const m of await mountsOf($, docker, container)) {
    if (m.Type === 'bind') refs.push({ path: m.Source, volume: undefined, destination: m.Destination, writable: m.RW });
    if (m.Type === 'volume' && m.Name)
      refs.push({
        path: await boundFolder($, docker, m.Name),
        volume: m.Name,
        destination: m.Destination,
        writable: m.RW,
      });
  }
  return refs;
}

const within = (a: string, b: string) => a === b || a.startsWith(`${b.replace(/\/+$/, '')}/`);

/** The first writable mount of `next` that reaches storage `live` mounts: the same volume, or overlapping folders. Pure. */
export function sharedStorage(
  next: StorageRef[],
  live: StorageRef[],
): { next: StorageRef; live: StorageRef } | undefined {
  for (const n of next.filter((r) => r.writable)) {
    const hit = live.find(
      (l) =>
        (n.volume !== undefined && n.volume === l.volume) ||
        (n.path !== undefined && l.path !== undefined && (within(n.path, l.path) || within(l.path, n.path))),
    );
    if (hit) return { next: n, live: hit };
  }
  return undefined;
}

/** The mount of a container that holds `dataDir` (the deepest one), if the data dir is on a mount at all. */
export function dataMount(refs: StorageRef[], dataDir: string): StorageRef | undefined {
  return refs
    .filter((r) => within(dataDir, r.destination))
    .sort((a, b) => b.destination.length - a.destination.length)[0];
}

/**
 * Refuses (exit 2) when the created new database container would mount writable the storage
 * that holds the live server's data dir (other shared mounts, such as the live socket folder an
 * online fill reads through, are not data files). A data dir in the container's own layer is not
 * shared; the system_identifier check after the start covers what this cannot see.
 */
export async function refuseSharedStorage($: Shell, live: RestoreTarget, newDb: string): Promise<void> {
  const liveData = dataMount(
    await storageOf($, live.docker, live.container),
    await adminSql($, live, 'SHOW data_directory;'),
  );
  const shared = liveData && sharedStorage(await storageOf($, live.docker, newDb), [liveData]);
  if (!shared) return;
  const what = (r: StorageRef) =>
    r.path ? `${r.path}${r.volume ? ` (volume ${r.volume})` : ''}` : `volume ${r.volume}`;
  throw new UsageError(
    `the new slot's database would mount ${what(shared.next)} at ${shared.next.destination} writable, and the live '${live.container}' keeps its data dir there (mounted at ${shared.live.destination}): two servers on one data dir destroy it`,
    'Give the database service storage of its own in the compose file (PGDATA set in its `environment:`, not an env_file; its folder mounted); see deploy-to-qnap --dry-run. Nothing was started.',
  );
}
