// The sources a compose file bind-mounts by relative path (`./src:/app/src:ro`), the one walk over
// them that both sides share: the workstation mirrors them to the NAS (remote/sync.ts), each new
// slot mounts its own copy of that mirror (slot-compose.ts).
import { posix } from 'node:path';
import { UsageError } from '../errors.ts';
import type { ComposeFile } from '../host/compose.ts';
import { parseMount } from './slot-storage.ts';

/** The mirror's folder under the NAS dir. */
export const syncDirName = 'deploy/sync';

export const syncRoot = (dir: string) => `${dir}/${syncDirName}`;

/**
 * A relative path of the compose file as a plain path inside its folder (`./src/` -> `src`);
 * a UsageError for one that leaves it (`../x`), which no slot folder can hold a copy of.
 */
export function insideComposeDir(raw: string, what: string): string {
  const path = posix.normalize(raw).replace(/\/+$/, '');
  if (path === '.' || path === '') return '.';
  if (path.startsWith('../') || path === '..' || path.startsWith('/')) {
    throw new UsageError(
      `${what} '${raw}' is outside the compose file's folder`,
      "Move it below the folder of the compose file (deploy-to-qnap copies that folder's sources to the NAS) and deploy again. Nothing was changed.",
    );
  }
  return path;
}

/** A relative bind mount of a service: the path as written and inside the compose folder. */
export interface RelativeBind {
  service: string;
  /** Its position in the service's `volumes`. */
  index: number;
  source: string;
  path: string;
  target: string;
  readOnly: boolean;
}

/** The relative bind mounts (`./x`, `../x`) of every service, in file order. */
export function relativeBinds(doc: ComposeFile, dbService: string): RelativeBind[] {
  const binds: RelativeBind[] = [];
  for (const [service, spec] of Object.entries(doc.services)) {
    // The database's binds are its storage, never sources to copy or send: a copy of a running
    // server's files is no cluster at all (slot-storage.ts isolates them or refuses).
    if (service === dbService) continue;
    for (const [index, entry] of (spec.volumes ?? []).entries()) {
      const mount = parseMount(entry);
      if (mount.kind !== 'bind' || !mount.source?.startsWith('.')) continue;
      const path = insideComposeDir(mount.source, `the '${service}' service's bind mount`);
      binds.push({ service, index, source: mount.source, path, target: mount.target, readOnly: mount.readOnly });
    }
  }
  return binds;
}
