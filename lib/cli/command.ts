// How a command is declared: its flags, the settings it reads, its help text. The parsing,
// --help, --version and settings resolution are done here once for every command.
import { parseArgs } from 'node:util';
import { ExitCode, UsageError } from '../errors.ts';
import { resolveSettings, settingSpec, type ResolvedSettings, type SettingKey } from '../settings.ts';
import { versionLine } from '../version.ts';

export interface FlagSpec {
  name: string;
  type: 'string' | 'boolean';
  short?: string;
  valueName?: string;
  description: string;
  /** Shown in the help as the default. */
  defaultText?: string;
}

export interface CommandSpec {
  name: string;
  /** e.g. `[FILE | latest] [options]` */
  usage: string;
  /** Paragraphs shown under the usage line. */
  description: string;
  flags: FlagSpec[];
  /** The settings this command reads; each gets its flag and appears in the help with its env name. */
  settings: SettingKey[];
  /** Whether the command changes anything, so takes --dry-run. */
  dryRun: boolean;
  maxPositionals: number;
  examples: string[];
}

/** Where a command's output goes: stdout (results, --json), stderr (progress), and whether stderr is a terminal. */
export interface Terminal {
  out(text: string): void;
  err(text: string): void;
  tty: boolean;
  /** stdout as a stream, for output that is piped through (a followed log). */
  stream: NodeJS.WritableStream;
}

/** The process's own terminal: the one place commands reach stdout and stderr. */
export const processTerminal = (): Terminal => ({
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  tty: process.stderr.isTTY === true,
  stream: process.stdout,
});

export interface Invocation {
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
  settings: ResolvedSettings;
  json: boolean;
  dryRun: boolean;
  terminal: Terminal;
}

/** One user-facing command: its name is also the name of its launcher on the NAS. */
export interface Command {
  name: string;
  /** Runs with the user's arguments; throws CliError (or anything) on failure. */
  run(argv: string[]): Promise<void>;
}

const commonFlags: FlagSpec[] = [
  { name: 'json', type: 'boolean', description: 'print a machine-readable summary on stdout' },
  { name: 'help', type: 'boolean', short: 'h', description: 'show this help' },
  { name: 'version', type: 'boolean', description: 'print the version' },
];
const dryRunFlag: FlagSpec = { name: 'dry-run', type: 'boolean', description: 'run every check, change nothing' };

/** Every flag a command accepts: its own, its settings', and the common ones. */
export function allFlags(spec: CommandSpec): FlagSpec[] {
  const settingFlags: FlagSpec[] = spec.settings.map((key) => {
    const s = settingSpec(key);
    return { name: s.flag, type: 'string', valueName: s.valueName, description: s.description };
  });
  return [...spec.flags, ...settingFlags, ...(spec.dryRun ? [dryRunFlag] : []), ...commonFlags];
}

/** Parses argv against a command's flags; pure, so tests pass arrays. Bad usage throws UsageError. */
export function parseCommandLine(
  spec: CommandSpec,
  argv: string[],
): { flags: Record<string, string | boolean | undefined>; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const flag of allFlags(spec))
    options[flag.name] = flag.short ? { type: flag.type, short: flag.short } : { type: flag.type };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new UsageError(`${spec.name}: ${message}`, `Run '${spec.name} --help' for the options.`);
  }
  if (parsed.positionals.length > spec.maxPositionals) {
    throw new UsageError(
      `${spec.name}: unexpected argument '${parsed.positionals[spec.maxPositionals]}'`,
      `Run '${spec.name} --help' for the usage.`,
    );
  }
  return {
    flags: { ...parsed.values } as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
  };
}

const exitCodeHelp = [
  `  ${ExitCode.ok}   success`,
  `  ${ExitCode.failed}   the operation failed (see the message and the log)`,
  `  ${ExitCode.usage}   bad usage or configuration; nothing was touched`,
  `  ${ExitCode.locked}  another backup, restore or deploy holds the lock`,
];

/** The --help text: the command's manual. Every flag, every setting with its env name and default. */
export function renderHelp(spec: CommandSpec): string {
  const own = [...spec.flags, ...(spec.dryRun ? [dryRunFlag] : []), ...commonFlags];
  const label = (f: FlagSpec) => `--${f.name}${f.valueName ? ` ${f.valueName}` : ''}${f.short ? `, -${f.short}` : ''}`;
  const settingRows = spec.settings.map((key) => {
    const s = settingSpec(key);
    const fallback = s.defaultValue('<dir>');
    return {
      label: `--${s.flag} ${s.valueName}`,
      text: `${s.description}\n[env ${s.env}; default: ${fallback || 'none'}]`,
    };
  });
  const rows = [
    ...own.map((f) => ({
      label: label(f),
      text: f.description + (f.defaultText ? ` [default: ${f.defaultText}]` : ''),
    })),
  ];
  const width = Math.max(...[...rows, ...settingRows].map((r) => r.label.length)) + 2;
  const fmt = (r: { label: string; text: string }) =>
    r.text
      .split('\n')
      .map((line, i) => `  ${(i === 0 ? r.label : '').padEnd(width)}${line}`)
      .join('\n');
  return [
    `Usage: ${spec.name} ${spec.usage}`,
    '',
    spec.description,
    '',
    'Options:',
    ...rows.map(fmt),
    '',
    'Settings (flag > environment > <dir>/planetarion.env > default):',
    ...settingRows.map(fmt),
    '',
    'Exit codes:',
    ...exitCodeHelp,
    '',
    'Examples:',
    ...spec.examples.map((e) => `  ${e}`),
    '',
  ].join('\n');
}

/**
 * Builds a Command from its spec and body: --help and --version answer before anything else,
 * then settings are resolved (bad ones exit 2 before anything is touched) and the body runs.
 */
export function defineCommand(
  spec: CommandSpec,
  body: (invocation: Invocation) => Promise<void>,
): Command & { spec: CommandSpec } {
  return {
    name: spec.name,
    spec,
    async run(argv) {
      const { flags, positionals } = parseCommandLine(spec, argv);
      if (flags.help) return void process.stdout.write(renderHelp(spec));
      if (flags.version) return void process.stdout.write(`${versionLine()}\n`);
      const settings = resolveSettings({ flags });
      await body({
        flags,
        positionals,
        settings,
        json: flags.json === true,
        dryRun: flags['dry-run'] === true,
        terminal: processTerminal(),
      });
    },
  };
}
