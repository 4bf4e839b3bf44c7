// Finding the live deployment by what runs, not by one name: the configured DB container, a
// stack the old scripts started (compose labels, `<project>_db_1` / `<project>-db-1`), or, when
// nothing runs, what a deployment leaves behind (stopped containers, the project's volumes,
// backups). Only when nothing of it exists is a deployment a first one.
import { basename } from 'node:path';
import { backupStamp, listBackups } from '../store/backup-files.ts';
import type { DeployState, Slot, SlotContainer } from './state.ts';
import type { ComposeContainer, Docker } from '../host/docker.ts';
import { UsageError } from '../errors.ts';
import type { Settings } from '../settings.ts';

/** What runs (or remains) of the deployment in the NAS dir. */
export type FoundDeployment =
  | { kind: 'live'; slot: Slot; dbContainer: string }
  | { kind: 'none' }
  | {
      kind: 'dormant';
      slot: Slot | undefined;
      stopped: string[];
      volumes: string[];
      backups: string[];
      recorded: string | undefined;
    };

/** A compose project name derived from the NAS dir (compose allows [a-z0-9_-]). */
export function baseProjectName(dir: string): string {
  return (
    basename(dir)
      .toLowerCase()
      .replace(/[^a-z0-9_-]/g, '') || 'planetarion'
  );
}

/** Projects of this tool's own slots: `<base>-s<stamp>`. */
const isSlotProject = (project: string, base: string) =>
  new RegExp(`^${base.replace(/[^\w]/g, '\\$&')}-s\\d{8}_\\d{6}$`).test(project);

/** The slot a container belongs to: the recorded one, or its compose project (the old scripts' stack). */
async function slotOf(docker: Docker, container: string, dbService: string, state: DeployState): Promise<Slot> {
  if (state.live?.containers.some((c) => c.name === container)) return state.live;
  const { project, service } = await docker.composeLabels(container);
  const members = project ? await docker.projectContainers(project) : [];
  const containers: SlotContainer[] = members.length
    ? members.map((m) => ({ service: m.service, name: m.name, canonicalName: m.name }))
    : [{ service: service ?? dbService, name: container, canonicalName: container }];
  return {
    project: project ?? container,
    slotId: `legacy${backupStamp(new Date())}`,
    managed: false,
    containers,
    since: 'before planetarion-backup',
  };
}

/** The database containers compose started for this NAS dir outside this tool's slots (the old scripts' stack). */
async function legacyDbContainers(docker: Docker, settings: Settings, dbService: string): Promise<ComposeContainer[]> {
  const base = baseProjectName(settings.dir);
  return (await docker.serviceContainers(dbService)).filter(
    (c) => (c.project === base || c.workingDir === settings.dir) && !isSlotProject(c.project, base),
  );
}

/** Finds the live deployment: running (live), remains of one (dormant), or nothing (none). */
export async function findDeployment(
  docker: Docker,
  settings: Settings,
  dbService: string,
  state: DeployState,
): Promise<FoundDeployment> {
  const configured = await docker.inspect(settings.container);
  if (configured.running)
    return {
      kind: 'live',
      slot: await slotOf(docker, settings.container, dbService, state),
      dbContainer: settings.container,
    };
  const legacy = configured.exists ? [] : await legacyDbContainers(docker, settings, dbService);
  const running = legacy.find((c) => c.running);
  if (running)
    return { kind: 'live', slot: await slotOf(docker, running.name, dbService, state), dbContainer: running.name };

  const stopped = configured.exists ? [settings.container] : legacy.map((c) => c.name);
  const projects = new Set([
    baseProjectName(settings.dir),
    ...(state.live ? [state.live.project] : []),
    ...legacy.map((c) => c.project),
  ]);
  const volumes = (await Promise.all([...projects].map((p) => docker.projectVolumes(p)))).flat();
  const backups = listBackups(settings.backupDir).map((b) => b.name);
  if (!stopped.length && !volumes.length && !backups.length && !state.live) return { kind: 'none' };
  const slot = stopped.length ? await slotOf(docker, stopped[0]!, dbService, state) : undefined;
  return { kind: 'dormant', slot, stopped, volumes, backups, recorded: state.live?.project };
}

/** The refusal for a deployment that exists but does not run (exit 2): what exists, how to start it, the flag. */
export function dormantRefusal(
  found: Extract<FoundDeployment, { kind: 'dormant' }>,
  settings: Settings,
  composeFile: string,
): UsageError {
  const what = [
    found.stopped.length
      ? `the database container ${found.stopped.map((n) => `'${n}'`).join(', ')} exists but is stopped`
      : undefined,
    found.volumes.length ? `volumes ${found.volumes.join(', ')}` : undefined,
    found.backups.length
      ? `${found.backups.length} backup(s) in ${settings.backupDir} (newest ${found.backups[0]})`
      : undefined,
    found.recorded ? `deploy/state.json records ${found.recorded} as live` : undefined,
  ].filter(Boolean);
  const start = found.stopped.length
    ? `Start it (docker start ${found.slot?.containers.map((c) => c.name).join(' ') ?? found.stopped.join(' ')}) and deploy again`
    : `Start the stack again (docker compose -f ${composeFile} up -d, as before) and deploy again`;
  return new UsageError(
    `no live deployment runs, but one exists: ${what.join('; ')}. This is not a first deployment: starting an empty stack would put an empty database live (and its backups would rotate the real ones away)`,
    `${start}, or pass --fresh-from-backup to restore the newest backup into a fresh deployment (proven like an A-B deployment). Nothing was started.`,
  );
}
