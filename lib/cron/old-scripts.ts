// The old shell scripts in the NAS folder (backup-database.sh and its siblings): a takeover moves
// them into <dir>/old-scripts/ so no one runs them by habit beside the new executables, and
// setup-backup-cron --uninstall moves them back. Nothing is deleted or overwritten.
import { existsSync, mkdirSync, readdirSync, renameSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

/** The folder (inside the NAS folder) the old scripts are moved to. */
export const oldScriptsFolder = 'old-scripts';

/** The old system's scripts: backup, cron setup, restore, and every deploy-to-qnap variant. */
const oldScriptPattern = /^(backup-database|setup-backup-cron|restore-database|deploy-to-qnap[\w.-]*)\.sh$/;

/** Whether a file name is one of the old scripts. */
export function isOldScriptName(name: string): boolean {
  return oldScriptPattern.test(name);
}

function namesIn(dir: string): string[] {
  try {
    return readdirSync(dir).filter(isOldScriptName).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** The old scripts a takeover would move out of `dir`. */
export function oldScriptsIn(dir: string): string[] {
  return namesIn(dir);
}

/** What a move did: the names moved, and where each went. */
export interface ScriptsMove {
  folder: string;
  moved: Array<{ from: string; to: string }>;
}

/**
 * Moves the old scripts into <dir>/old-scripts/ (0700). A name already there (an earlier takeover)
 * is never overwritten: the newcomer gets a `.<n>` suffix.
 */
export function moveOldScripts(dir: string): ScriptsMove {
  const folder = join(dir, oldScriptsFolder);
  const moved: ScriptsMove['moved'] = [];
  for (const name of namesIn(dir)) {
    mkdirSync(folder, { recursive: true, mode: 0o700 });
    let to = join(folder, name);
    for (let n = 1; existsSync(to); n++) to = join(folder, `${name}.${n}`);
    renameSync(join(dir, name), to);
    moved.push({ from: join(dir, name), to });
  }
  return { folder, moved };
}

/**
 * Moves the old scripts back from <dir>/old-scripts/ (what --uninstall does); a script that
 * exists in `dir` again is left where it is. The folder goes when it is empty.
 */
export function restoreOldScripts(dir: string): ScriptsMove {
  const folder = join(dir, oldScriptsFolder);
  const moved: ScriptsMove['moved'] = [];
  for (const name of namesIn(folder)) {
    const to = join(dir, name);
    if (existsSync(to)) continue;
    renameSync(join(folder, name), to);
    moved.push({ from: join(folder, name), to });
  }
  if (existsSync(folder) && readdirSync(folder).length === 0) rmdirSync(folder);
  return { folder, moved };
}
