// Settings in layers: a flag beats the environment, which beats a KEY=VALUE file, which beats the
// default. Both configuration readers (settings.ts on the NAS, remote/config.ts on the workstation)
// take their values through here, so the same line means the same thing in both files.
import { readFileSync } from 'node:fs';
import { UsageError } from './errors.ts';

/** Where a setting's value came from, for --help and diagnostics. */
export type SettingSource = 'flag' | 'env' | 'config' | 'default';

/** The layers a setting is looked up in. */
export interface Layers {
  /** Flag values by flag name (without --). */
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
  /** The KEY=VALUE file's values (empty when there is none). */
  file: Map<string, string>;
  /** That file's path, for messages. */
  filePath?: string;
}

/** A value found in a layer: the text, its layer, and how to name it in a message. */
export interface LayerValue {
  raw: string;
  source: Exclude<SettingSource, 'default'>;
  origin: string;
}

/**
 * One setting's value by precedence, or undefined when the default applies. An empty value in the
 * environment or the file means unset (`KEY=`), as in the shell scripts' env files that `source` read.
 */
export function pickLayer(layers: Layers, flag: string, env: string): LayerValue | undefined {
  const fromFlag = layers.flags[flag];
  if (typeof fromFlag === 'string') return { raw: fromFlag, source: 'flag', origin: `--${flag}` };
  const fromEnv = layers.env[env];
  if (fromEnv) return { raw: fromEnv, source: 'env', origin: env };
  const fromFile = layers.file.get(env);
  if (fromFile) return { raw: fromFile, source: 'config', origin: `${env} in ${layers.filePath ?? 'the config file'}` };
  return undefined;
}

/** Reads KEY=VALUE lines (comments, blank lines, optional quotes); undefined when the file is absent. */
export function parseEnvFile(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const [index, line] of text.split(/\r?\n/).entries()) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(trimmed);
    if (!match) throw new Error(`line ${index + 1} is not KEY=VALUE: ${trimmed}`);
    let value = match[2]!;
    // A quoted value may be followed by a comment, as `source` allows: KEY='v' # why
    const quoted = /^(['"])(.*)\1\s*(?:#.*)?$/.exec(value);
    if (quoted) value = quoted[2]!;
    else value = value.replace(/\s+#.*$/, '');
    values.set(match[1]!, value);
  }
  return values;
}

/** A file's text, or undefined when it does not exist (other errors are thrown). */
export function readIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * A KEY=VALUE file's values: an empty map when it does not exist; one that cannot be read or parsed
 * is a UsageError naming it (`unreadable` is the advice; `special` may name a cause better first).
 */
export function readEnvFile(
  path: string,
  options: {
    readFile?: (path: string) => string | undefined;
    unreadable: string;
    malformed: string;
    /** How messages name the file when it cannot be read / parsed (default: its path). */
    names?: { unreadable: string; invalid: string };
    special?: (code: string | undefined) => UsageError | undefined;
  },
): { values: Map<string, string>; exists: boolean } {
  let text: string | undefined;
  try {
    text = (options.readFile ?? readIfPresent)(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const special = options.special?.(code);
    if (special) throw special;
    const why =
      code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message;
    throw new UsageError(`cannot read ${options.names?.unreadable ?? path}: ${why}`, options.unreadable);
  }
  if (text === undefined) return { values: new Map(), exists: false };
  try {
    return { values: parseEnvFile(text), exists: true };
  } catch (error) {
    throw new UsageError(`invalid ${options.names?.invalid ?? path}: ${(error as Error).message}`, options.malformed);
  }
}
