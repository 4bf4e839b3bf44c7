// setup-backup-cron's work: find the crontab (QNAP's persistent /etc/config/crontab, else the
// user's through `crontab`), check everything cron will need, install or remove the managed
// lines, read them back, and prove the installed command works with `backup-database --dry-run`.
import {
  accessSync,
  chmodSync,
  chownSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  type Stats,
  statSync,
} from 'node:fs';
import { userInfo } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { writeFileAtomic } from '../host/atomic-file.ts';
import {
  cronLine,
  crontabDiff,
  findManagedLines,
  foreignBackupLines,
  managedLinesProblem,
  oldScriptLines,
  planCrontab,
  removeManagedLines,
  restoreOldScriptLines,
  retireOldScriptLines,
  type FoundLine,
  type ManagedJob,
  type ManagedLine,
} from './crontab.ts';
import { locateDocker, pathCandidates } from '../host/docker-binary.ts';
import { CliError, ExitCode, UsageError, errorText } from '../errors.ts';
import { offsiteCronWarnings } from '../offsite/config.ts';
import { moveOldScripts, oldScriptsFolder, oldScriptsIn, restoreOldScripts } from './old-scripts.ts';
import { nextRuns } from '../schedule.ts';
import { defaultDir, resolveSettings, settingSpec, settingSpecs, type SettingKey, type Settings } from '../settings.ts';
import type { Shell } from '../host/shell.ts';
import { readStatus, type Status } from '../store/status-file.ts';
import { formatRun, formatTimestamp } from '../format.ts';
import { backupLogName, configFileName, statusFileName } from '../paths.ts';
import { requireBaseDir } from '../store/folders.ts';

/** The PATH cron gives its jobs (Debian's cron and QNAP's busybox crond alike): no /usr/local/bin, no Container Station. */
export const cronPath = '/usr/bin:/bin';
/** Where the copy of the previous QNAP crontab is kept, beside it. */
export const backupCopySuffix = '.planetarion-backup.bak';
/** The log both managed lines append to (backup-database's own log, so one file tells the whole story). */
/** The settings a cron line carries when they differ from what the executables would resolve by themselves. */
// ageRecipients is carried: a key set only in this shell would otherwise leave cron's backups unencrypted.
export const carriedSettings: readonly SettingKey[] = [
  'dir',
  'backupDir',
  'logDir',
  'container',
  'dbUser',
  'dbName',
  'docker',
  'ageRecipients',
];

/** Which crontab is edited. */
export interface CrontabTarget {
  kind: 'qnap' | 'generic';
  /** QNAP: the persistent file (`<root>/etc/config/crontab`). */
  file: string | undefined;
  /** QNAP: the init script restarted after loading (`<root>/etc/init.d/crond.sh`), if present. */
  crondScript: string | undefined;
  /** For messages. */
  label: string;
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The first executable `name` on PATH, or undefined. */
export function findOnPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  return pathCandidates(name, env).find(isExecutableFile);
}

/** QNAP when `<root>/etc/config/crontab` exists, else the generic `crontab` command; a usage error when neither works. */
export function detectCrontab(root: string, env: NodeJS.ProcessEnv): CrontabTarget {
  const qnapFile = join(root, 'etc/config/crontab');
  const hasCrontab = findOnPath('crontab', env) !== undefined;
  if (existsSync(qnapFile)) {
    if (!hasCrontab)
      throw new UsageError(
        `QNAP crontab ${qnapFile} found, but no 'crontab' command on PATH to load it`,
        `Add the folder holding crontab to PATH (PATH is ${env.PATH ?? 'unset'}).`,
      );
    const script = join(root, 'etc/init.d/crond.sh');
    return {
      kind: 'qnap',
      file: qnapFile,
      crondScript: existsSync(script) ? script : undefined,
      label: `${qnapFile} (QNAP)`,
    };
  }
  if (root !== '/') {
    // The generic mode edits this user's real crontab, which no --root can redirect.
    throw new UsageError(
      `--root '${root}' holds no etc/config/crontab`,
      'Point --root at a QNAP tree (with etc/config/crontab), or leave it out to edit your own crontab.',
    );
  }
  if (!hasCrontab) {
    throw new UsageError(
      `no crontab found: neither QNAP's ${qnapFile} nor a 'crontab' command on PATH`,
      'On QNAP run this on the NAS itself; elsewhere install cron (Debian: apt-get install cron).',
    );
  }
  return {
    kind: 'generic',
    file: undefined,
    crondScript: undefined,
    label: `the crontab of user ${userInfo().username}`,
  };
}

/** Refuses a missing or non-executable executable (exit 2), saying how to fix it. */
export function checkExecutable(path: string, what: string, advice: string): void {
  let stat: Stats;
  try {
    stat = statSync(path);
  } catch {
    throw new UsageError(`${what} '${path}' does not exist`, advice);
  }
  if (!stat.isFile()) throw new UsageError(`${what} '${path}' is not a file`, advice);
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new UsageError(`${what} '${path}' is not executable`, `Make it executable: chmod 755 ${path}`);
  }
}

/** The base dir must exist and be writable (backups, lock and status.json live there); so must the log dir if it exists. */
export function checkDirectories(settings: Settings): void {
  requireBaseDir(settings.dir);
  for (const [name, dir] of [
    ['PLANETARION_DIR', settings.dir],
    ['PLANETARION_LOG_DIR', settings.logDir],
  ] as const) {
    if (!existsSync(dir)) continue;
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch {
      throw new UsageError(
        `${name} '${dir}' is not writable by this user`,
        `Fix its owner or mode (the backup runs as the user whose crontab this is).`,
      );
    }
  }
}

/**
 * The docker cron's run will use. The executables find docker themselves (PATH, Container
 * Station's folder, /usr/local/bin, /usr/bin); when that search with cron's PATH finds nothing
 * but this shell's PATH does, the line has to pin DOCKER.
 */
export function dockerForCron(
  settings: Settings,
  root: string,
  env: NodeJS.ProcessEnv,
): { docker: string; pin: string | undefined } {
  if (settings.docker) return { docker: locateDocker({ explicit: settings.docker }), pin: undefined };
  try {
    return { docker: locateDocker({ env: { PATH: cronPath }, root }), pin: undefined };
  } catch {
    const found = locateDocker({ env, root });
    return { docker: found, pin: found };
  }
}

/**
 * The VAR=value assignments a cron line needs so its run resolves the same settings as this one:
 * PLANETARION_DIR when it is not the default, then every carried setting that the executable,
 * given that dir (and so its planetarion.env), would resolve differently; DOCKER when pinned.
 */
export function cronAssignments(
  settings: Settings,
  dockerPin: string | undefined,
  readFile?: (path: string) => string | undefined,
): Array<[string, string]> {
  const env: Record<string, string> = {};
  if (settings.dir !== defaultDir) env.PLANETARION_DIR = settings.dir;
  const seen = resolveSettings({ env: { ...env }, ...(readFile ? { readFile } : {}) });
  for (const key of carriedSettings) {
    const value = settings[key];
    if (key === 'dir' || value === undefined || String(value) === String(seen[key])) continue;
    env[settingSpec(key).env] = String(value);
  }
  if (dockerPin !== undefined && env.DOCKER === undefined && seen.docker === undefined) env.DOCKER = dockerPin;
  const order = (settingSpecs as readonly { env: string }[]).map((s) => s.env);
  return Object.entries(env).sort(([a], [b]) => order.indexOf(a) - order.indexOf(b));
}

/** Settings given only in this shell's environment that cron's run will not see (they belong in planetarion.env). */
export function settingsCronWillMiss(env: NodeJS.ProcessEnv): string[] {
  const ours = new Set<string>([...carriedSettings, 'schedule', 'drillSchedule']);
  return (settingSpecs as readonly { key: string; env: string }[])
    .filter((s) => !ours.has(s.key) && env[s.env])
    .map((s) => s.env);
}

/** Reads the crontab: QNAP's file (byte-exact, so it must be UTF-8), or `crontab -l` (none yet = empty). */
export async function readCrontab($: Shell, target: CrontabTarget): Promise<string> {
  if (target.file) {
    const raw = readFileSync(target.file);
    const text = raw.toString('utf8');
    if (!Buffer.from(text, 'utf8').equals(raw)) {
      throw new UsageError(
        `${target.file} holds bytes that are not UTF-8, so its other lines could not be kept byte for byte`,
        'Fix the file by hand first.',
      );
    }
    return text;
  }
  return readLoadedCrontab($);
}

/** `exit 1`, or the signal that ended a command (a timeout kills it). */
function exitText(r: { exitCode: number | null; signal: NodeJS.Signals | null }): string {
  return r.exitCode === null ? `killed by ${r.signal ?? 'a signal'}` : `exit ${r.exitCode}`;
}

/** `crontab -l`: what cron has loaded for this user; empty when there is no crontab yet. */
export async function readLoadedCrontab($: Shell): Promise<string> {
  const r = await $`crontab -l`.nothrow().timeout('30s');
  if (r.exitCode === 0) return r.stdout;
  if (/no crontab for/i.test(r.stderr)) return '';
  throw new CliError(`'crontab -l' failed (${exitText(r)}): ${r.stderr.trim()}`, {
    advice: 'Check that cron is installed and this user may use it.',
  });
}

/** What writing the crontab did. */
export interface WriteOutcome {
  backupCopy: string | undefined;
  /** The reload commands run, in order. */
  commands: string[];
}

function cannotWrite(file: string, error: unknown): CliError {
  const code = (error as NodeJS.ErrnoException).code;
  const why =
    code === 'EROFS'
      ? 'it is on a read-only filesystem'
      : code === 'EPERM'
        ? 'it is immutable or protected (chattr +i?)'
        : errorText(error);
  return new CliError(`cannot write ${file}: ${why}; the crontab was not changed`, {
    cause: error,
    advice: 'Make it writable (as root on the NAS) and run setup-backup-cron again.',
  });
}

/**
 * Writes the new crontab. QNAP: a copy of the previous file beside it, the file replaced atomically
 * (mode and owner kept), `crontab <file>`, `<root>/etc/init.d/crond.sh restart`; if `crontab` refuses
 * the file, the previous one is put back. Generic: `crontab -` with the text on stdin.
 */
export async function writeCrontab(
  $: Shell,
  target: CrontabTarget,
  before: string,
  after: string,
  progress: (line: string) => void,
): Promise<WriteOutcome> {
  if (!target.file) {
    // A Buffer, not a string: zx never closes stdin for an empty string, and `crontab -` would wait forever.
    const r = await $({ input: Buffer.from(after, 'utf8') })`crontab -`.nothrow().timeout('30s');
    if (r.exitCode !== 0)
      throw new CliError(
        `'crontab -' refused the new crontab (${exitText(r)}): ${r.stderr.trim()}; the crontab was not changed`,
      );
    progress(`Installed ${target.label} with crontab -`);
    return { backupCopy: undefined, commands: ['crontab -'] };
  }
  // On QNAP /etc/config is a link into the config partition; replace the real file, never a link.
  const file = realpathSync(target.file);
  const stat = statSync(file);
  const mode = stat.mode & 0o7777;
  // Find out before anything is written whether the file can be replaced (immutable, read-only mount).
  try {
    closeSync(openSync(file, 'r+'));
  } catch (error) {
    throw cannotWrite(file, error);
  }
  const backupCopy = `${file}${backupCopySuffix}`;
  const replace = (path: string, text: string) => {
    writeFileAtomic(path, text, mode);
    chmodSync(path, mode);
    if (process.getuid?.() === 0 && (stat.uid !== process.getuid() || stat.gid !== process.getgid?.()))
      chownSync(path, stat.uid, stat.gid);
  };
  try {
    replace(backupCopy, before);
  } catch (error) {
    throw cannotWrite(backupCopy, error);
  }
  try {
    replace(file, after);
  } catch (error) {
    throw cannotWrite(file, error);
  }
  progress(`Wrote ${file} (previous copy: ${backupCopy})`);
  const commands = await reloadQnapCron($, target, () => replace(file, before));
  return { backupCopy, commands };
}

/** QNAP: load the file into the running cron and restart crond, as QNAP's own tools do. */
async function reloadQnapCron($: Shell, target: CrontabTarget, undo?: () => void): Promise<string[]> {
  const file = target.file!;
  const commands: string[] = [];
  const load = await $`crontab ${file}`.nothrow().timeout('30s');
  commands.push(`crontab ${file}`);
  if (load.exitCode !== 0) {
    let restored = '';
    if (undo) {
      undo();
      restored = '; the previous file was put back';
    }
    throw new CliError(`'crontab ${file}' failed (${exitText(load)}): ${load.stderr.trim()}${restored}`);
  }
  if (target.crondScript) {
    const restart = await $`${target.crondScript} restart`.nothrow().timeout('60s');
    commands.push(`${target.crondScript} restart`);
    if (restart.exitCode !== 0) {
      throw new CliError(`'${target.crondScript} restart' failed (${exitText(restart)}): ${restart.stderr.trim()}`, {
        advice: `${file} is written and loaded with crontab; restart crond by hand: ${target.crondScript} restart`,
      });
    }
  }
  return commands;
}

/**
 * Reads the crontab back and checks it holds exactly the expected managed lines (QNAP: the file
 * must be exactly what was written, and `crontab -l` must show the lines too).
 */
export async function verifyCrontab(
  $: Shell,
  target: CrontabTarget,
  expectedText: string,
  expected: readonly ManagedLine[],
): Promise<void> {
  const fail = (where: string, problem: string) =>
    new CliError(`verification failed: ${where}: ${problem}`, {
      advice: 'Check the crontab by hand (crontab -l) and run setup-backup-cron again.',
    });
  if (target.file) {
    const text = readFileSync(target.file, 'utf8');
    if (text !== expectedText) throw fail(target.file, 'it does not hold what was written');
  }
  const loaded = await readLoadedCrontab($);
  const problem = managedLinesProblem(loaded, expected);
  if (problem) throw fail('crontab -l', problem);
}

/** The outcome of the self test: `backup-database --dry-run` run like cron runs it. */
export interface SelfTest {
  ok: boolean;
  exitCode: number | null;
  /** Its stderr and stdout (log lines). */
  output: string;
}

/** The environment cron gives a job, plus the line's assignments. */
export function cronJobEnvironment(
  assignments: ReadonlyArray<readonly [string, string]>,
  env: NodeJS.ProcessEnv,
): Record<string, string> {
  const base: Record<string, string> = { PATH: cronPath, SHELL: '/bin/sh', HOME: env.HOME ?? '/' };
  if (env.LOGNAME ?? env.USER) base.LOGNAME = (env.LOGNAME ?? env.USER)!;
  return { ...base, ...Object.fromEntries(assignments) };
}

/** Runs `<backup executable> --dry-run` with cron's environment and the line's assignments. */
export async function dryRunWithCronEnvironment(
  $: Shell,
  binary: string,
  assignments: ReadonlyArray<readonly [string, string]>,
  env: NodeJS.ProcessEnv,
): Promise<SelfTest> {
  const r = await $({ env: cronJobEnvironment(assignments, env) })`${binary} --dry-run`.nothrow().timeout('180s');
  return { ok: r.exitCode === 0, exitCode: r.exitCode, output: (r.stderr + r.stdout).trim() };
}

/** The local time zone's name, for "next runs (Europe/Berlin)". */
export function localTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'local time';
}

export interface CronSetupOptions {
  settings: Settings;
  /** A shell with the invoking user's environment (cron's is given to the self test only). */
  $: Shell;
  /** The invoking environment: PATH for crontab and docker, HOME/LOGNAME for the self test. */
  env: NodeJS.ProcessEnv;
  /** Filesystem root for the system's files (etc/config/crontab, etc/init.d/crond.sh, Container Station). */
  root: string;
  /** The backup executable; default `<dir>/backup-database`. */
  binary: string | undefined;
  drill: boolean;
  skipTest: boolean;
  dryRun: boolean;
  /** Human progress lines (stderr). */
  progress: (line: string) => void;
  now?: Date;
}

/** What setup-backup-cron did (or, with --dry-run, would do): the --json summary. */
export interface CronSetupResult {
  action: 'install' | 'uninstall' | 'status';
  mode: 'qnap' | 'generic';
  crontab: string;
  dryRun: boolean;
  changed: boolean;
  backupCopy?: string | undefined;
  commands: string[];
  /** install: the lines wanted; uninstall: the lines removed; status: the lines found. */
  lines: Array<ManagedLine & { disabled?: boolean }>;
  nextRuns: Partial<Record<ManagedJob, string[]>>;
  timeZone: string;
  diff?: string;
  selfTest?: SelfTest;
  warnings: string[];
  status?: Status;
  statusFile?: string;
  /**
   * The old shell scripts: install takes over (or, dry run, would) their cron lines, which stay
   * commented out, and moves their scripts into `folder`; uninstall puts both back.
   */
  oldScripts?: { lines: string[]; scripts: string[]; folder: string };
}

/** What every action's result says of the crontab: which one, and how `before` became `after`. */
function crontabResult(
  action: CronSetupResult['action'],
  target: CrontabTarget,
  before: string,
  after: string,
  dryRun: boolean,
): Pick<CronSetupResult, 'action' | 'mode' | 'crontab' | 'dryRun' | 'changed' | 'commands' | 'timeZone'> {
  return {
    action,
    mode: target.kind,
    crontab: target.file ?? 'crontab -l',
    dryRun,
    changed: before !== after,
    commands: [],
    timeZone: localTimeZone(),
  };
}

function nextRunsOf(
  lines: Array<{ job: ManagedJob; schedule: string | undefined }>,
  now: Date,
): Partial<Record<ManagedJob, string[]>> {
  const out: Partial<Record<ManagedJob, string[]>> = {};
  for (const l of lines) if (l.schedule) out[l.job] = nextRuns(l.schedule, 3, now).map((d) => d.toISOString());
  return out;
}

/** What cron will not see or will do twice: a pinned docker, settings only this shell has, off-site keys. */
function setupWarnings(settings: Settings, env: NodeJS.ProcessEnv, dockerPin: string | undefined): string[] {
  const warnings: string[] = [];
  if (dockerPin)
    warnings.push(
      `docker is not on cron's PATH (${cronPath}) nor where Container Station puts it; the lines pin DOCKER=${dockerPin}`,
    );
  warnings.push(...offsiteCronWarnings(settings, env));
  for (const name of settingsCronWillMiss(env))
    warnings.push(
      `${name} is set in this shell but cron will not see it; put it in ${join(settings.dir, configFileName)}`,
    );
  return warnings;
}

/** The managed lines: the backup, and the weekly restore drill unless left out. */
function managedLines(
  settings: Settings,
  drill: boolean,
  job: { binary: string; restoreBinary: string; assignments: Array<[string, string]>; log: string },
): ManagedLine[] {
  const { binary, restoreBinary, assignments, log } = job;
  const lines: ManagedLine[] = [
    {
      job: 'backup',
      line: cronLine({ job: 'backup', schedule: settings.schedule, env: assignments, argv: [binary], log }),
    },
  ];
  if (drill) {
    // With off-site copies the weekly drill fetches the newest one: it proves the copy a new NAS would restore.
    const drillArgv = [restoreBinary, '--test', ...(settings.offsite ? ['--from-offsite'] : []), 'latest'];
    lines.push({
      job: 'drill',
      line: cronLine({ job: 'drill', schedule: settings.drillSchedule, env: assignments, argv: drillArgv, log }),
    });
  }
  return lines;
}

/** Writes the planned crontab (when it changed), proves the running cron holds the lines, then moves the old scripts away. */
async function applyInstall(
  $: Shell,
  settings: Settings,
  plan: { target: CrontabTarget; before: string; after: string; lines: ManagedLine[] },
  result: CronSetupResult,
  progress: (line: string) => void,
): Promise<void> {
  const { target, before, after, lines } = plan;
  // cron opens `>> <logs>/backup.log` before the executable runs: the folder must exist.
  try {
    mkdirSync(settings.logDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new CliError(
      `cannot create the log folder ${settings.logDir}: ${errorText(error)}; the crontab was not changed`,
      { cause: error },
    );
  }
  if (result.changed) {
    const outcome = await writeCrontab($, target, before, after, progress);
    result.backupCopy = outcome.backupCopy;
    result.commands = outcome.commands;
  } else {
    progress(`${target.label} already holds these lines; not rewritten`);
  }
  if (!result.changed && target.file) {
    // QNAP: the file may be right while the running cron has something else (a `crontab -` since): then load it.
    try {
      await verifyCrontab($, target, after, lines);
    } catch {
      progress(`The running cron does not hold the lines of ${target.file}; loading it`);
      result.commands = await reloadQnapCron($, target);
      await verifyCrontab($, target, after, lines);
    }
  } else await verifyCrontab($, target, after, lines);
  progress(
    `Verified: ${target.label} holds the ${lines.map((l) => l.job).join(' and ')} line${lines.length > 1 ? 's' : ''}`,
  );
  // Only once the managed line runs: the old line, if it still ran, would find its script gone.
  result.oldScripts!.scripts = moveOldScripts(settings.dir).moved.map((m) => basename(m.from));
  reportTakeover(result, target, progress);
}

/**
 * Installs (or refreshes) the managed lines: validates everything first (exit 2, nothing
 * written), writes, reads back, then runs the self test unless skipped. A failed self test is in
 * the result (the lines stay installed); the caller decides the exit code.
 */
export async function installBackupCron(options: CronSetupOptions): Promise<CronSetupResult> {
  const { settings, $, env, root, progress } = options;
  const now = options.now ?? new Date();
  const target = detectCrontab(root, env);
  checkDirectories(settings);
  const binary = resolve(options.binary ?? join(settings.dir, 'backup-database'));
  checkExecutable(
    binary,
    'backup executable',
    'Copy the executables there (deploy-to-qnap does), or give the path of backup-database with --binary.',
  );
  const restoreBinary = join(dirname(binary), 'restore-database');
  // Encrypted backups cannot be drilled where only the public keys live (the NAS, by design):
  // a drill line would fail every week, so it is left out and the reason said.
  if (options.drill && settings.ageRecipients) {
    options.progress(
      'No restore-drill line: backups are encrypted (PLANETARION_AGE_RECIPIENTS) and the NAS holds no identity; run restore-database --test latest --identity FILE where the key is.',
    );
    options = { ...options, drill: false };
  }
  if (options.drill) {
    checkExecutable(
      restoreBinary,
      'restore executable (for the weekly drill)',
      `Put restore-database beside ${binary}, or install without the drill line: --no-drill.`,
    );
  }
  const docker = dockerForCron(settings, root, env);
  const warnings = setupWarnings(settings, env, docker.pin);
  const assignments = cronAssignments(settings, docker.pin);
  const log = join(settings.logDir, backupLogName);
  const lines = managedLines(settings, options.drill, { binary, restoreBinary, assignments, log });

  const before = await readCrontab($, target);
  const takeover = await planTakeover($, target, before, settings.dir);
  const after = planCrontab(takeover.text, lines);
  for (const line of foreignBackupLines(after))
    warnings.push(
      `another line also runs a backup; remove it unless it is meant to run beside the managed one: ${line.trim()}`,
    );
  const result: CronSetupResult = {
    ...crontabResult('install', target, before, after, options.dryRun),
    lines,
    nextRuns: nextRunsOf(
      [
        { job: 'backup', schedule: settings.schedule },
        ...(options.drill ? [{ job: 'drill' as const, schedule: settings.drillSchedule }] : []),
      ],
      now,
    ),
    diff: crontabDiff(before, after, target.file ?? 'crontab'),
    warnings,
    oldScripts: takeover.oldScripts,
  };
  for (const w of warnings) progress(`Warning: ${w}`);

  if (!options.dryRun) await applyInstall($, settings, { target, before, after, lines }, result, progress);
  if (!options.skipTest) {
    progress(`Self test: ${binary} --dry-run (with cron's environment)`);
    result.selfTest = await dryRunWithCronEnvironment($, binary, assignments, env);
  }
  return result;
}

/**
 * What taking over the old scripts changes: their cron lines commented out (on QNAP also those
 * only the running cron holds, recorded in the file), and the scripts in the NAS folder that
 * will move to old-scripts/.
 */
async function planTakeover(
  $: Shell,
  target: CrontabTarget,
  before: string,
  dir: string,
): Promise<{ text: string; oldScripts: NonNullable<CronSetupResult['oldScripts']> }> {
  // QNAP: the old setup script loaded its line with `crontab -` only, so the file may lack it.
  const loadedOnly = target.file ? oldScriptLines(await readLoadedCrontab($)) : [];
  const { text, retired } = retireOldScriptLines(before, loadedOnly);
  return { text, oldScripts: { lines: retired, scripts: oldScriptsIn(dir), folder: join(dir, oldScriptsFolder) } };
}

/** Progress lines for what a takeover (or its undoing) did. */
function reportTakeover(result: CronSetupResult, target: CrontabTarget, progress: (line: string) => void): void {
  const old = result.oldScripts;
  if (!old) return;
  const install = result.action === 'install';
  for (const line of old.lines) {
    progress(
      install
        ? `Took over the old scripts' cron line (kept commented out in ${target.label}; --uninstall puts it back): ${line}`
        : `Put back the old scripts' cron line: ${line}`,
    );
  }
  if (old.scripts.length) {
    progress(
      install
        ? `Moved the old scripts to ${old.folder}/ (--uninstall moves them back): ${old.scripts.join(', ')}`
        : `Moved the old scripts back from ${old.folder}/: ${old.scripts.join(', ')}`,
    );
  }
}

/** Removes the managed lines and undoes a takeover of the old scripts (their cron line and the scripts back), nothing else. */
export async function uninstallBackupCron(
  options: Pick<CronSetupOptions, '$' | 'env' | 'root' | 'dryRun' | 'progress' | 'settings'>,
): Promise<CronSetupResult> {
  const { $, env, root, progress } = options;
  const target = detectCrontab(root, env);
  const before = await readCrontab($, target);
  const { text: after, restored } = restoreOldScriptLines(removeManagedLines(before));
  const removed = findManagedLines(before);
  const folder = join(options.settings.dir, oldScriptsFolder);
  const result: CronSetupResult = {
    ...crontabResult('uninstall', target, before, after, options.dryRun),
    lines: removed.map(({ job, line }) => ({ job, line })),
    nextRuns: {},
    diff: crontabDiff(before, after, target.file ?? 'crontab'),
    warnings: [],
    oldScripts: { lines: restored, scripts: oldScriptsIn(folder), folder },
  };
  if (options.dryRun) return result;
  if (result.changed) {
    const outcome = await writeCrontab($, target, before, after, progress);
    result.backupCopy = outcome.backupCopy;
    result.commands = outcome.commands;
  } else {
    progress(`${target.label} holds no managed line; nothing to remove`);
  }
  await verifyCrontab($, target, after, []);
  result.oldScripts!.scripts = restoreOldScripts(options.settings.dir).moved.map((m) => basename(m.to));
  reportTakeover(result, target, progress);
  return result;
}

/** The installed managed lines, their next runs and the last backup's result. */
export async function backupCronStatus(
  options: Pick<CronSetupOptions, '$' | 'env' | 'root' | 'settings' | 'progress'> & { now?: Date },
): Promise<CronSetupResult> {
  const target = detectCrontab(options.root, options.env);
  const text = await readCrontab(options.$, target);
  const found = findManagedLines(text);
  const warnings: string[] = [];
  if (target.file) {
    const loaded = findManagedLines(await readLoadedCrontab(options.$));
    const same = (a: FoundLine[], b: FoundLine[]) =>
      a.map((l) => l.line).join('\n') === b.map((l) => l.line).join('\n');
    if (!same(found, loaded))
      warnings.push(
        `the running cron (crontab -l) does not hold the same managed lines as ${target.file}; run setup-backup-cron again`,
      );
  }
  for (const line of oldScriptLines(text))
    warnings.push(`the old scripts' line still runs a backup; run setup-backup-cron to replace it: ${line.trim()}`);
  for (const job of ['backup', 'drill'] as const) {
    if (found.filter((l) => l.job === job).length > 1)
      warnings.push(`the ${job} line is there more than once; run setup-backup-cron again to fix it`);
  }
  for (const w of warnings) options.progress(`Warning: ${w}`);
  return {
    ...crontabResult('status', target, text, text, false),
    lines: found.map(({ job, line, schedule }) => ({ job, line, disabled: schedule === undefined })),
    nextRuns: nextRunsOf(found, options.now ?? new Date()),
    warnings,
    status: readStatus(options.settings.dir),
    statusFile: join(options.settings.dir, statusFileName),
  };
}

const indent = (text: string, by = '    ') =>
  text
    .split('\n')
    .map((l) => by + l)
    .join('\n');

function renderNextRuns(result: CronSetupResult): string[] {
  const out: string[] = [];
  for (const [job, runs] of Object.entries(result.nextRuns)) {
    out.push(
      `Next ${job === 'backup' ? 'backups' : 'restore drills'} (${result.timeZone}): ${runs.map((r) => formatRun(new Date(r))).join(', ')}`,
    );
  }
  return out;
}

/** What happened (or, dry run, would happen) to the old scripts' cron lines and files. */
function renderOldScripts(result: CronSetupResult): string[] {
  const old = result.oldScripts;
  if (!old || result.action === 'status') return [];
  const out: string[] = [];
  const would = result.dryRun;
  if (result.action === 'install') {
    if (old.lines.length)
      out.push(
        `${would ? 'Would replace' : 'Replaced'} the old scripts' cron line${old.lines.length > 1 ? 's' : ''} by the managed one (kept commented out; --uninstall puts ${old.lines.length > 1 ? 'them' : 'it'} back):`,
        ...old.lines.map((l) => `  ${l}`),
      );
    if (old.scripts.length)
      out.push(
        `${would ? 'Would move' : 'Moved'} the old scripts to ${old.folder}/ (--uninstall moves them back): ${old.scripts.join(', ')}`,
      );
  } else {
    if (old.lines.length)
      out.push(
        `${would ? 'Would put' : 'Put'} back the old scripts' cron line${old.lines.length > 1 ? 's' : ''}:`,
        ...old.lines.map((l) => `  ${l}`),
      );
    if (old.scripts.length)
      out.push(`${would ? 'Would move' : 'Moved'} the old scripts back from ${old.folder}/: ${old.scripts.join(', ')}`);
  }
  return out;
}

/** The human report of an install, uninstall or status (stdout; warnings went to stderr as they came). */
export function renderCronSetup(result: CronSetupResult): string {
  const out: string[] = [];
  const where = result.mode === 'qnap' ? result.crontab : 'the user crontab';
  if (result.action === 'status') {
    out.push(`Crontab: ${result.mode === 'qnap' ? `${result.crontab} (QNAP)` : "this user's crontab (crontab -l)"}`);
    for (const job of ['backup', 'drill'] as const) {
      const lines = result.lines.filter((l) => l.job === job);
      if (lines.length === 0) out.push(`${job}: not installed`);
      for (const l of lines)
        out.push(`${job}: ${l.disabled ? 'installed but commented out (disabled)' : 'installed'}`, `    ${l.line}`);
    }
    out.push(...renderNextRuns(result));
    const s = result.status ?? {};
    if (!s.lastRun) out.push(`Last backup: none recorded in ${result.statusFile}`);
    else {
      const run = s.lastRun;
      out.push(
        run.ok
          ? `Last backup: succeeded at ${formatTimestamp(new Date(run.time))}${run.file ? `: ${run.file}` : ''}${run.size !== undefined ? ` (${run.size} bytes)` : ''}`
          : `Last backup: FAILED at ${formatTimestamp(new Date(run.time))}: ${run.error ?? 'see backup.log'}`,
      );
      if (!run.ok && s.lastSuccess)
        out.push(
          `Last successful backup: ${formatTimestamp(new Date(s.lastSuccess.time))}${s.lastSuccess.file ? `: ${s.lastSuccess.file}` : ''}`,
        );
    }
    if (s.lastDrill)
      out.push(
        `Last restore drill: ${s.lastDrill.passed ? 'passed' : 'FAILED'} at ${formatTimestamp(new Date(s.lastDrill.time))} on ${s.lastDrill.file}${s.lastDrill.passed ? '' : `: ${s.lastDrill.detail}`}`,
      );
  } else if (result.dryRun) {
    out.push(
      result.changed
        ? `Dry run: ${where} would change like this (nothing was written):`
        : `Dry run: ${where} already holds this; nothing would change.`,
    );
    if (result.diff) out.push(result.diff.replace(/\n$/, ''));
  } else if (result.action === 'uninstall') {
    out.push(
      result.changed
        ? `Removed ${result.lines.length} managed line${result.lines.length === 1 ? '' : 's'} from ${where}.`
        : `No managed line in ${where}; nothing removed.`,
    );
  } else {
    out.push(`${result.changed ? 'Installed in' : 'Already installed in'} ${where}:`);
    for (const l of result.lines) out.push(`  ${l.job}: ${l.line}`);
  }
  out.push(...renderOldScripts(result));
  if (result.action !== 'status') {
    if (result.backupCopy) out.push(`Previous crontab kept as ${result.backupCopy}`);
    if (result.commands.length) out.push(`Ran: ${result.commands.join(', then ')}`);
    if (result.action === 'install') out.push(...renderNextRuns(result));
  }
  if (result.selfTest) {
    const last = result.selfTest.output.split('\n').filter(Boolean).pop() ?? '';
    out.push(
      result.selfTest.ok
        ? `Self test passed (backup-database --dry-run with cron's environment): ${last.replace(/^\[[^\]]+\] \w+ - /, '')}`
        : `Self test FAILED (backup-database --dry-run with cron's environment, exit ${result.selfTest.exitCode}):\n${indent(result.selfTest.output)}`,
    );
  }
  return `${out.join('\n')}\n`;
}

/** The error for a failed self test: the lines stay installed, and the message says so. */
export function selfTestFailure(result: CronSetupResult): CliError {
  return new CliError(
    result.dryRun
      ? `the self test (backup-database --dry-run) failed with exit ${result.selfTest?.exitCode}; nothing was changed`
      : `the self test (backup-database --dry-run) failed with exit ${result.selfTest?.exitCode}; the cron lines ARE installed and will fail the same way until this is fixed`,
    {
      exitCode: ExitCode.failed,
      advice: 'Fix the problem shown above, then run setup-backup-cron again (or backup-database --dry-run) to check.',
    },
  );
}

/** Turns --root into an absolute, existing folder. */
export function resolveRoot(raw: string | undefined): string {
  if (raw === undefined) return '/';
  const root = isAbsolute(raw) ? raw : resolve(raw);
  if (!existsSync(root) || !statSync(root).isDirectory())
    throw new UsageError(
      `--root '${raw}' is not a directory`,
      'Give the folder that stands for / (e.g. a mounted image).',
    );
  return root;
}
