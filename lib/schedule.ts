import { Cron } from 'croner';

const monthNames = 'jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec';
const dayNames = 'sun|mon|tue|wed|thu|fri|sat';
/** What a field of a classic 5-field crontab may hold (croner also accepts L, W, # and ?, cron does not). */
const fieldPatterns = [
  /^[\d*,/-]+$/,
  /^[\d*,/-]+$/,
  /^[\d*,/-]+$/,
  new RegExp(`^([\\d*,/-]|${monthNames})+$`, 'i'),
  new RegExp(`^([\\d*,/-]|${dayNames})+$`, 'i'),
];
const fieldNames = ['minute', 'hour', 'day of month', 'month', 'day of week'];

/** Checks a crontab schedule (5 fields, as cron reads them); returns the reason it is invalid, or undefined. */
export function scheduleProblem(expression: string): string | undefined {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== 5 || expression.trim() === '') {
    return `a schedule has exactly 5 fields (minute hour day-of-month month day-of-week), this has ${expression.trim() === '' ? 0 : fields.length}`;
  }
  for (const [i, field] of fields.entries()) {
    if (!fieldPatterns[i]!.test(field)) return `the ${fieldNames[i]} field '${field}' is not a cron field`;
  }
  try {
    new Cron(fields.join(' '), { paused: true });
  } catch (error) {
    return String(error instanceof Error ? error.message : error).replace(/^CronPattern: /, '');
  }
  return undefined;
}

/** The next `count` times a valid schedule fires after `from`, in the machine's local time zone. */
export function nextRuns(expression: string, count: number, from: Date = new Date()): Date[] {
  const cron = new Cron(expression.trim().split(/\s+/).join(' '), { paused: true });
  return cron.nextRuns(count, from);
}
