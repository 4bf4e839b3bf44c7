// Crontab text, planned without touching anything: the managed lines setup-backup-cron owns
// (found again by a trailing marker), how they are written, and how a crontab changes when they
// are installed or removed. Every other line is kept byte for byte.
import { UsageError } from '../errors.ts';
import { quotePosix } from '../host/shell.ts';

/** The jobs setup-backup-cron manages: the scheduled backup and the weekly restore drill. */
export type ManagedJob = 'backup' | 'drill';
export const managedJobs: readonly ManagedJob[] = ['backup', 'drill'];

/** One line setup-backup-cron wants in the crontab. */
export interface ManagedLine {
  job: ManagedJob;
  line: string;
}

/** A managed line found in a crontab. */
export interface FoundLine extends ManagedLine {
  /** 0-based line number. */
  index: number;
  /** The 5 schedule fields, or undefined when the line is commented out (disabled by hand). */
  schedule: string | undefined;
}

const markerPrefix = 'planetarion-backup:';
/** What marks a line as ours: a trailing shell comment (sh ignores it, so cron runs the line unchanged). */
const markerPattern = /\s#\s*planetarion-backup:(backup|drill)\s*$/;

/** The marker that ends a managed line, e.g. `# planetarion-backup:backup`. */
export function managedMarker(job: ManagedJob): string {
  return `# ${markerPrefix}${job}`;
}

/** Which managed job a crontab line is, if any. Only the trailing marker counts, not what the line runs. */
export function managedJobOf(line: string): ManagedJob | undefined {
  return markerPattern.exec(line)?.[1] as ManagedJob | undefined;
}

/** What one cron job runs and where its output goes. */
export interface CronJob {
  job: ManagedJob;
  /** 5 cron fields, already validated. */
  schedule: string;
  /** VAR=value assignments put before the command (cron's environment is nearly empty). */
  env: ReadonlyArray<readonly [string, string]>;
  /** The executable (absolute path) and its arguments. */
  argv: readonly string[];
  /** The log file stdout and stderr are appended to. */
  log: string;
}

/**
 * Cron turns an unescaped `%` in a command into a newline, and busybox crond (QNAP) does not
 * honour `\%`; a newline would end the line. Values with either cannot be written safely.
 */
function assertCronSafe(value: string): void {
  if (/[%\n\r]/.test(value)) {
    throw new UsageError(
      `'${value}' cannot go into a crontab line: cron reads % as a newline and a line cannot span lines`,
      'Use a path or name without % and without line breaks.',
    );
  }
}

/**
 * The crontab line for a job: `<schedule> VAR=value... /abs/exe args >> LOG 2>&1 # planetarion-backup:<job>`.
 * Every value is POSIX-quoted (cron hands the command to /bin/sh).
 */
export function cronLine(job: CronJob): string {
  for (const [, value] of job.env) assertCronSafe(value);
  for (const value of [...job.argv, job.log]) assertCronSafe(value);
  const env = job.env.map(([key, value]) => `${key}=${quotePosix(value)}`);
  return [
    job.schedule,
    ...env,
    ...job.argv.map(quotePosix),
    '>>',
    quotePosix(job.log),
    '2>&1',
    managedMarker(job.job),
  ].join(' ');
}

/** A crontab split into lines, each with its own terminator ('' only for a last line without one). */
interface Line {
  text: string;
  eol: '\n' | '';
}

function splitLines(text: string): Line[] {
  if (text === '') return [];
  const parts = text.split('\n');
  const last = parts.pop()!;
  const lines: Line[] = parts.map((part) => ({ text: part, eol: '\n' }));
  if (last !== '') lines.push({ text: last, eol: '' });
  return lines;
}

const joinLines = (lines: Line[]) => lines.map((l) => l.text + l.eol).join('');

/**
 * The crontab after installing `desired`: each job's first managed line is replaced in place, any
 * further managed line (a duplicate, or a job no longer wanted) is dropped, jobs not yet present are
 * appended at the end. Every other line is kept byte for byte, whitespace, comments, blank lines and
 * a missing final newline included; only when lines are appended after a last line without a
 * newline is one added there, as cron needs every line terminated.
 */
export function planCrontab(old: string, desired: readonly ManagedLine[]): string {
  const pending = new Map<ManagedJob, string>();
  for (const d of desired) {
    if (pending.has(d.job)) throw new Error(`planCrontab: job '${d.job}' given twice`);
    if (managedJobOf(d.line) !== d.job)
      throw new Error(`planCrontab: the line for '${d.job}' does not end with its marker`);
    pending.set(d.job, d.line);
  }
  const out: Line[] = [];
  for (const line of splitLines(old)) {
    const job = managedJobOf(line.text);
    if (job === undefined) {
      out.push(line);
      continue;
    }
    const replacement = pending.get(job);
    if (replacement !== undefined) {
      out.push({ text: replacement, eol: '\n' });
      pending.delete(job);
    }
  }
  if (pending.size > 0 && out.length > 0 && out[out.length - 1]!.eol === '')
    out[out.length - 1] = { ...out[out.length - 1]!, eol: '\n' };
  for (const d of desired) if (pending.has(d.job)) out.push({ text: d.line, eol: '\n' });
  return joinLines(out);
}

/** The crontab without any managed line; everything else byte for byte. */
export function removeManagedLines(old: string): string {
  return planCrontab(old, []);
}

/** The managed lines in a crontab, in order (a job may appear more than once in a hand-edited file). */
export function findManagedLines(text: string): FoundLine[] {
  const found: FoundLine[] = [];
  for (const [index, { text: line }] of splitLines(text).entries()) {
    const job = managedJobOf(line);
    if (job === undefined) continue;
    const disabled = line.trimStart().startsWith('#');
    found.push({ job, line, index, schedule: disabled ? undefined : line.trim().split(/\s+/).slice(0, 5).join(' ') });
  }
  return found;
}

/**
 * Why a crontab does not hold exactly the expected managed lines (each once, nothing else
 * marked), or undefined when it does.
 */
export function managedLinesProblem(text: string, expected: readonly ManagedLine[]): string | undefined {
  const found = findManagedLines(text);
  for (const e of expected) {
    const same = found.filter((f) => f.job === e.job);
    if (same.length === 0) return `the ${e.job} line is missing`;
    if (same.length > 1) return `the ${e.job} line is there ${same.length} times`;
    if (same[0]!.line !== e.line) return `the ${e.job} line differs: ${same[0]!.line}`;
  }
  const extra = found.find((f) => !expected.some((e) => e.job === f.job));
  return extra ? `an unexpected ${extra.job} line is there: ${extra.line}` : undefined;
}

/** Lines that are not ours but run a backup too (a hand-written one; the old script's is taken over), worth a warning. */
export function foreignBackupLines(text: string): string[] {
  return splitLines(text)
    .map((l) => l.text)
    .filter((l) => managedJobOf(l) === undefined && !l.trimStart().startsWith('#') && /backup-database/.test(l));
}

/** Edit script between two line lists (longest common subsequence; crontabs are small). */
function diffOps(a: string[], b: string[]): Array<{ op: ' ' | '-' | '+'; line: string }> {
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--)
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  }
  const ops: Array<{ op: ' ' | '-' | '+'; line: string }> = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ op: ' ', line: a[i++]! });
      j++;
    } else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) ops.push({ op: '-', line: a[i++]! });
    else ops.push({ op: '+', line: b[j++]! });
  }
  return ops;
}

/**
 * A unified diff (`---`/`+++`, `@@` hunks with 3 lines of context, `-` removed, `+` added) from
 * one crontab text to another; empty when they are the same.
 */
export function crontabDiff(before: string, after: string, label: string): string {
  if (before === after) return '';
  // Each line keeps its terminator in the comparison, so a newline added at the end shows as a change.
  const a = splitLines(before).map((l) => l.text + l.eol);
  const b = splitLines(after).map((l) => l.text + l.eol);
  const ops = diffOps(a, b);
  const context = 3;
  const changed = ops.map((o, k) => (o.op !== ' ' ? k : -1)).filter((k) => k >= 0);
  const out = [`--- ${label}`, `+++ ${label} (new)`];
  let k = 0;
  while (k < changed.length) {
    const start = Math.max(0, changed[k]! - context);
    let end = changed[k]!;
    while (k + 1 < changed.length && changed[k + 1]! - end <= 2 * context) end = changed[++k]!;
    k++;
    end = Math.min(ops.length - 1, end + context);
    const slice = ops.slice(start, end + 1);
    const oldStart = ops.slice(0, start).filter((o) => o.op !== '+').length;
    const newStart = ops.slice(0, start).filter((o) => o.op !== '-').length;
    const oldCount = slice.filter((o) => o.op !== '+').length;
    const newCount = slice.filter((o) => o.op !== '-').length;
    out.push(
      `@@ -${oldCount ? oldStart + 1 : oldStart},${oldCount} +${newCount ? newStart + 1 : newStart},${newCount} @@`,
    );
    for (const o of slice) {
      out.push(`${o.op}${o.line.endsWith('\n') ? o.line.slice(0, -1) : o.line}`);
      if (!o.line.endsWith('\n')) out.push('\\ No newline at end of file');
    }
  }
  return `${out.join('\n')}\n`;
}

/**
 * The old shell scripts' backup line (`0 2,10,18 * * * .../backup-database.sh`): taken over by
 * the managed line. It is kept in the crontab commented out behind this marker, so that
 * `--uninstall` can put it back exactly as it was, and no one mistakes it for a running job.
 */
export const retiredMarker = `# ${markerPrefix}old-script-line `;

/** Whether a crontab line runs the old shell script's backup (not a comment, not ours). */
export function isOldScriptLine(line: string): boolean {
  return (
    managedJobOf(line) === undefined &&
    !line.trimStart().startsWith('#') &&
    /(^|[\s/'"])backup-database\.sh(?=$|[\s;&|>'"])/.test(line)
  );
}

/** The old script's lines in a crontab, as they stand. */
export function oldScriptLines(text: string): string[] {
  return splitLines(text)
    .map((l) => l.text)
    .filter(isOldScriptLine);
}

/**
 * The crontab with every old-script line commented out behind retiredMarker, where it stands;
 * `alsoRetire` (old lines cron runs but the file lacks: QNAP's crontab loaded with `crontab -`)
 * are appended in that form so that they are recorded for --uninstall. Pure.
 */
export function retireOldScriptLines(
  text: string,
  alsoRetire: readonly string[] = [],
): { text: string; retired: string[] } {
  const retired: string[] = [];
  const out = splitLines(text).map((l) => {
    if (!isOldScriptLine(l.text)) return l;
    retired.push(l.text);
    return { text: retiredMarker + l.text, eol: '\n' as const };
  });
  // A line already recorded (an earlier takeover) is not recorded twice.
  const recorded = new Set(
    splitLines(text)
      .filter((l) => l.text.startsWith(retiredMarker))
      .map((l) => l.text.slice(retiredMarker.length)),
  );
  const extra = [...new Set(alsoRetire)].filter((l) => !retired.includes(l) && !recorded.has(l));
  if (extra.length && out.length && out[out.length - 1]!.eol === '')
    out[out.length - 1] = { ...out[out.length - 1]!, eol: '\n' };
  for (const line of extra) {
    retired.push(line);
    out.push({ text: retiredMarker + line, eol: '\n' });
  }
  return { text: joinLines(out), retired };
}

/** The crontab with the retired old-script lines active again, where they stand (what --uninstall does). Pure. */
export function restoreOldScriptLines(text: string): { text: string; restored: string[] } {
  const restored: string[] = [];
  const out = splitLines(text).map((l) => {
    if (!l.text.startsWith(retiredMarker)) return l;
    const line = l.text.slice(retiredMarker.length);
    restored.push(line);
    return { ...l, text: line };
  });
  return { text: joinLines(out), restored };
}
