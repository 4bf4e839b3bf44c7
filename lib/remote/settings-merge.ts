// planetarion.env on the NAS is the operator's: a deploy merges the workstation's file into it and
// never overwrites it. Keys only the NAS has are kept, keys only the workstation has are added;
// a key both have with different values (the age recipients, PLANETARION_KEEP, ...) is a change
// the operator must accept with --replace-settings, which puts the workstation's file in place as
// it is. The plan is data (shown by --dry-run); reading and writing go over SSH.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError, errorText } from '../errors.ts';
import { uploadFile } from './upload.ts';
import { parseEnvFile } from '../layered.ts';
import type { Ssh } from './ssh.ts';
import { configFileName } from '../paths.ts';

/** One key whose value differs between the NAS's file and the workstation's (undefined: not set there). */
export interface SettingDifference {
  key: string;
  nas: string | undefined;
  local: string | undefined;
}

export interface SettingsMergePlan {
  /**
   * create: the NAS has no file; same: nothing to write; merge: keys added to the NAS's file;
   * replace: the workstation's file replaces it (--replace-settings); refuse: a change needs that flag.
   */
  action: 'create' | 'same' | 'merge' | 'replace' | 'refuse';
  /** The file's text to write (create, merge, replace). */
  text: string;
  added: string[];
  /** Keys only the NAS's file has: kept by a merge, dropped by --replace-settings. */
  nasOnly: string[];
  changed: SettingDifference[];
}

/** Keys whose values must not be shown: credentials, tokens, URLs that carry them. */
const secretKey = /SECRET|TOKEN|PASSWORD|PASSWD|ACCESS_KEY|PING_URL|CREDENTIAL/i;

function parse(text: string, where: string): Map<string, string> {
  try {
    return parseEnvFile(text);
  } catch (error) {
    throw new UsageError(
      `${where} cannot be read as KEY=VALUE lines: ${errorText(error)}`,
      'Fix that line, then deploy again.',
    );
  }
}

/** The lines of `text` that set one of `keys` (as written there, comments of their own kept out). */
function linesSetting(text: string, keys: Set<string>): string[] {
  return text.split(/\r?\n/).filter((line) => {
    const key = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=/.exec(line)?.[1];
    return key !== undefined && keys.has(key);
  });
}

/** What a deploy does with planetarion.env, from both files' texts (`nas` undefined: none there). Pure. */
export function planSettingsMerge(local: string, nas: string | undefined, replace: boolean): SettingsMergePlan {
  const mine = parse(local, "the workstation's planetarion.env");
  if (nas === undefined) return { action: 'create', text: local, added: [...mine.keys()], nasOnly: [], changed: [] };
  const theirs = replace
    ? safeParse(nas)
    : parse(nas, 'planetarion.env on the NAS (pass --replace-settings to replace it)');
  const added = [...mine.keys()].filter((k) => !theirs.has(k));
  const nasOnly = [...theirs.keys()].filter((k) => !mine.has(k));
  const changed = [...mine.keys()]
    .filter((k) => theirs.has(k) && theirs.get(k) !== mine.get(k))
    .map((key) => ({ key, nas: theirs.get(key), local: mine.get(key) }));
  if (replace) return { action: nas === local ? 'same' : 'replace', text: local, added, nasOnly, changed };
  if (changed.length) return { action: 'refuse', text: nas, added, nasOnly, changed };
  if (!added.length) return { action: 'same', text: nas, added, nasOnly, changed };
  const body = nas === '' || nas.endsWith('\n') ? nas : `${nas}\n`;
  const text = `${body}# added by deploy-to-qnap from the workstation's planetarion.env\n${linesSetting(local, new Set(added)).join('\n')}\n`;
  return { action: 'merge', text, added, nasOnly, changed };
}

/** A NAS file that does not parse is still replaced by --replace-settings: its keys are then unknown. */
function safeParse(text: string): Map<string, string> {
  try {
    return parseEnvFile(text);
  } catch {
    return new Map();
  }
}

const shown = (key: string, value: string | undefined) =>
  value === undefined ? '(not set)' : secretKey.test(key) ? '(a secret value)' : JSON.stringify(value);

/** The lines that show the difference and what the deploy does about it (secret values never shown). */
export function describeSettingsPlan(plan: SettingsMergePlan, remotePath: string): string[] {
  const lines: string[] = [];
  const diff = [
    ...plan.changed.map((c) => `  ${c.key}: on the NAS ${shown(c.key, c.nas)}, here ${shown(c.key, c.local)}`),
    ...plan.nasOnly.map((k) => `  ${k}: only on the NAS${plan.action === 'replace' ? ' (dropped)' : ' (kept)'}`),
    ...plan.added.map((k) => `  ${k}: only here (added)`),
  ];
  if (plan.action === 'create')
    lines.push(`Settings: ${remotePath} does not exist yet; the workstation's planetarion.env is put there`);
  else if (plan.action === 'same')
    lines.push(
      `Settings: ${remotePath} already holds every setting of the workstation's planetarion.env${plan.nasOnly.length ? ` (and ${plan.nasOnly.join(', ')} of its own, kept)` : ''}; not rewritten`,
    );
  else if (plan.action === 'merge')
    lines.push(`Settings: merged into ${remotePath} (nothing on the NAS changes or goes):`, ...diff);
  else if (plan.action === 'replace')
    lines.push(`Settings: --replace-settings: the workstation's planetarion.env replaces ${remotePath}:`, ...diff);
  else lines.push(`Settings: the workstation's planetarion.env would change ${remotePath}:`, ...diff);
  return lines;
}

/** The refusal of a deploy whose planetarion.env would change the NAS's (exit 2, nothing uploaded). */
export function settingsRefusal(plan: SettingsMergePlan, remotePath: string): UsageError {
  const keys = plan.changed.map((c) => c.key).join(', ');
  return new UsageError(
    `the workstation's planetarion.env would change ${keys} in ${remotePath}; nothing was uploaded`,
    `${describeSettingsPlan(plan, remotePath).slice(1).join('\n')}\nMake the files agree (edit either), or pass --replace-settings to put the workstation's file in place as it is.`,
  );
}

/** Reads the NAS's planetarion.env over SSH (undefined when there is none) and plans the merge. */
export async function planSettingsUpload(
  ssh: Ssh,
  localText: string,
  remotePath: string,
  replace: boolean,
): Promise<SettingsMergePlan> {
  const read = await ssh.run(['sh', '-c', 'if [ -e "$1" ]; then cat -- "$1"; else exit 3; fi', 'sh', remotePath]);
  if (read.exitCode !== 0 && read.exitCode !== 3)
    throw new UsageError(
      `cannot read ${remotePath} on the NAS: ${read.stderr.trim() || `exit ${read.exitCode}`}`,
      'Check its owner and mode (0600, the deploying user), then deploy again.',
    );
  return planSettingsMerge(localText, read.exitCode === 3 ? undefined : read.stdout, replace);
}

/** Writes the planned file on the NAS (0600, renamed into place); nothing for `same` (and never for `refuse`). */
export async function applySettingsUpload(ssh: Ssh, plan: SettingsMergePlan, remotePath: string): Promise<void> {
  if (plan.action === 'same' || plan.action === 'refuse') return;
  const dir = mkdtempSync(join(tmpdir(), 'planetarion-settings-'));
  try {
    const file = join(dir, configFileName);
    writeFileSync(file, plan.text, { mode: 0o600 });
    await uploadFile(ssh, file, remotePath);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
