// `<dir>/deploy/state.json`: which slot is live, which is kept for --rollback, and what the
// last deployment did.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../host/atomic-file.ts';
import { UsageError, errorText } from '../errors.ts';

export interface SlotContainer {
  service: string;
  /** The name it has now. */
  name: string;
  /** The name it has while its slot is live. */
  canonicalName: string;
}

export interface Slot {
  /** Compose project of the slot. */
  project: string;
  /** Suffix its containers carry while not live (e.g. s20261126_031500). */
  slotId: string;
  /** Whether this tool created it (so may remove it with its volumes). */
  managed: boolean;
  containers: SlotContainer[];
  since: string;
  /** NAS folders its volumes bind (driver_opts device), created for it and removed with it. */
  folders?: string[];
}

export interface DeploySummary {
  time: string;
  ok: boolean;
  mode: 'first' | 'ab' | 'fresh' | 'rollback';
  backupUsed: string | null;
  backupAgeSeconds: number | null;
  fingerprint: string | null;
  downtimeMs: number | null;
  totalMs: number;
  attempts: Array<{ file: string; ok: boolean; reason: string | undefined; diagnostics: string | undefined }>;
  error?: string;
  /**
   * Where the names ended: `switched` (the new slot is live, whatever failed after), `undone` (an
   * interrupted switch was put back), `rollback failed` (the current slot was started again).
   */
  outcome?: 'switched' | 'undone' | 'rolled back' | 'rollback failed';
  /** What failed after the switch (cron, clean-up, ...): the switch stands. */
  warnings?: string[];
  /** A backup kept out of rotation (--rollback keeps the writes made since the switch in one). */
  pinnedBackup?: string;
}

export interface DeployState {
  live?: Slot;
  previous?: Slot;
  lastDeploy?: DeploySummary;
}

export const deployDirName = 'deploy';

/** The compose file of a slot (its project), written when the slot is built and kept while the slot is. */
export const slotComposePath = (dir: string, project: string) => join(dir, deployDirName, `${project}.yml`);

/** The state file's content; empty before the first deployment. A file that cannot be read is an error, never `{}`. */
export function readDeployState(dir: string): DeployState {
  const path = join(dir, deployDirName, 'state.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new UsageError(
      `cannot read the deployment state ${path}: ${(error as NodeJS.ErrnoException).code ?? errorText(error)}`,
      'Make it readable by this user (it is written 0600 by deploy-to-qnap).',
    );
  }
  try {
    const state = JSON.parse(text) as unknown;
    if (state && typeof state === 'object' && !Array.isArray(state)) return state as DeployState;
  } catch {
    // reported below
  }
  throw new UsageError(
    `the deployment state ${path} is corrupt (not a JSON object)`,
    `It records which slot is live and which is kept for --rollback. Move it aside (mv ${path} ${path}.bad), check 'docker ps -a' for the live containers, and deploy again.`,
  );
}

/** Writes the state atomically. */
export function writeDeployState(dir: string, state: DeployState): void {
  mkdirSync(join(dir, deployDirName), { recursive: true, mode: 0o700 });
  writeFileAtomic(join(dir, deployDirName, 'state.json'), `${JSON.stringify(state, null, 2)}\n`);
}
