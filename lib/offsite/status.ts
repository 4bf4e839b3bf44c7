// What `backup-database --status` says about off-site: each local backup's off-site state,
// the last off-site run, and with --offsite the remote side itself.
import { listBackups } from '../store/backup-files.ts';
import { errorText, UsageError } from '../errors.ts';
import type { Settings } from '../settings.ts';
import type { Status } from '../store/status-file.ts';
import { describeS3Error, OffsiteStore } from './client.ts';
import { offsiteConfig, type OffsiteConfig } from './config.ts';
import { inventory, isComplete, type RemoteBackup } from './remote.ts';
import { headMatches, localFacts } from './upload.ts';
import { formatAge, formatBytes } from '../format.ts';

/** copied: all three objects there, size and sha256 confirmed; the others say what the next backup run re-uploads. */
export type OffsiteState = 'copied' | 'missing' | 'incomplete' | 'differs' | 'no checksum' | 'beyond keep';

export interface OffsiteReport {
  url: string;
  /** Set when the server could not be asked; the states are then unknown. */
  error?: string;
  local: Array<{ file: string; offsite: OffsiteState }>;
  /** With --offsite: every backup under the prefix, newest first. */
  remote?: Array<{ file: string; size: number | null; created: string; complete: boolean; encrypted: boolean }>;
  /** Objects under the prefix that are not backups (never touched). */
  foreign?: number;
  lastRun?: NonNullable<Status['offsite']>['lastRun'];
  unencrypted: string[];
}

/** The off-site report, or undefined when off-site is not configured. Never throws for a server problem. */
export async function offsiteReport(
  settings: Settings,
  status: Status,
  withRemote: boolean,
): Promise<OffsiteReport | undefined> {
  const config = offsiteConfig(settings);
  if (!config) return undefined;
  const report: OffsiteReport = { url: config.url, local: [], lastRun: status.offsite?.lastRun, unencrypted: [] };
  let store: OffsiteStore | undefined;
  try {
    store = await OffsiteStore.open(config);
    const { backups, foreign } = await inventory(store);
    for (const [index, backup] of listBackups(settings.backupDir).entries()) {
      report.local.push({
        file: backup.name,
        offsite: index < config.keep ? await localState(store, backup.path, backups) : 'beyond keep',
      });
    }
    report.unencrypted = backups.filter((b) => !b.encrypted).map((b) => b.name);
    if (withRemote) {
      report.remote = backups.map((b) => ({
        file: b.name,
        size: b.size ?? null,
        created: b.time.toISOString(),
        complete: isComplete(b),
        encrypted: b.encrypted,
      }));
      report.foreign = foreign;
    }
  } catch (error) {
    report.error = error instanceof UsageError || !store ? errorText(error) : describeS3Error(error, config);
  } finally {
    store?.close();
  }
  return report;
}

async function localState(store: OffsiteStore, path: string, remote: RemoteBackup[]): Promise<OffsiteState> {
  const facts = localFacts(path);
  if (!facts) return 'no checksum';
  const found = remote.find((b) => b.name === facts.name);
  if (!found || found.size === undefined) return 'missing';
  if (!headMatches(await store.head(facts.name), facts.size, facts.sha256)) return 'differs';
  return isComplete(found) ? 'copied' : 'incomplete';
}

const stateText: Record<OffsiteState, string> = {
  copied: 'off-site ok',
  missing: 'OFF-SITE MISSING (the next backup run uploads it)',
  incomplete: 'OFF-SITE INCOMPLETE (the next backup run uploads it again)',
  differs: 'OFF-SITE COPY DIFFERS (the next backup run uploads it again)',
  'no checksum': 'not copied off-site (no .sha256)',
  'beyond keep': 'not kept off-site (older than the newest PLANETARION_OFFSITE_KEEP)',
};

/** The human lines --status appends. */
export function renderOffsiteReport(
  report: OffsiteReport,
  config: OffsiteConfig | undefined,
  now = new Date(),
): string {
  const lines = [
    '',
    `Off-site: ${report.url}${config?.endpoint ? ` at ${new URL(config.endpoint).origin}` : ''}, keeping ${config?.keep ?? '?'}`,
  ];
  if (report.error) lines.push(`  CANNOT CHECK: ${report.error}`);
  else for (const b of report.local) lines.push(`  ${b.file}  ${stateText[b.offsite]}`);
  const run = report.lastRun;
  if (run)
    lines.push(
      `  Last off-site run: ${run.time} ${run.ok ? `succeeded (${run.uploaded.length} uploaded)` : `FAILED: ${run.error}`}`,
    );
  if (report.unencrypted.length)
    lines.push(
      `  WARNING: ${report.unencrypted.length} off-site backup(s) are not encrypted: the storage provider can read them (set PLANETARION_AGE_RECIPIENTS)`,
    );
  if (report.remote) {
    lines.push('', `Backups in ${report.url} (newest first):`);
    if (report.remote.length === 0) lines.push('  none');
    for (const b of report.remote) {
      const age = formatAge(Math.max(0, Math.round((now.getTime() - new Date(b.created).getTime()) / 1000)));
      lines.push(
        `  ${b.file}  ${(b.size === null ? '-' : formatBytes(b.size)).padStart(9)}  ${age.padStart(12)} old  ${b.complete ? 'complete' : 'INCOMPLETE'}${b.encrypted ? ', encrypted (age)' : ', not encrypted'}`,
      );
    }
    if (report.foreign)
      lines.push(`  (${report.foreign} other object(s) under the prefix: not backups, never touched)`);
  }
  return `${lines.join('\n')}\n`;
}
