// deploy-to-qnap on the NAS (--local): the A-B deployment, --rollback, --dry-run, --status, and
// the detached run and its following (scripts/deploy-to-qnap.ts holds the spec and the help).
import { join, resolve } from 'node:path';
import { parseIdentities, readIdentityFile } from '../age.ts';
import type { Invocation, Terminal } from '../cli/command.ts';
import { readSecretFromStdin } from '../cli/prompt.ts';
import { installBackupCron, resolveRoot } from '../cron/setup.ts';
import { UsageError } from '../errors.ts';
import { formatAge } from '../format.ts';
import { locateDocker } from '../host/docker-binary.ts';
import { createShell } from '../host/shell.ts';
import { Logger } from '../log.ts';
import { deployLogName, nasComposeFileName } from '../paths.ts';
import type { Settings } from '../settings.ts';
import {
  argvOf,
  checkRunId,
  followRun,
  latestRun,
  recordRunOutcome,
  runOutcome,
  startDetachedRun,
} from '../deploy/detach.ts';
import { planDeploy, rollbackDeployment, runDeploy } from '../deploy/flow.ts';
import { reconcileReplicationIfIdle, replicationLeftovers } from '../deploy/replication.ts';
import { readStagingJournal } from '../deploy/staging-journal.ts';
import { startInterruptedStopsIfIdle } from '../deploy/interrupted-stops.ts';
import { readDeployState } from '../deploy/state.ts';
import { reconcileIfIdle } from '../deploy/switch.ts';
import { parseServiceImages } from '../deploy/service-images.ts';
import { checkBackupDirectories } from '../store/folders.ts';

export async function nasDeployCommand(invocation: Invocation): Promise<void> {
  const { flags, settings, json, terminal } = invocation;
  if (flags.follow) {
    const from = flags.from === undefined ? undefined : Number(flags.from);
    if (from !== undefined && !(Number.isInteger(from) && from >= 0))
      throw new UsageError(`invalid --from '${flags.from}': a byte offset (a whole number)`);
    await followRun(settings.dir, String(flags.follow), from, terminal.stream);
    return;
  }
  if (flags.status) return showStatus(settings, json, terminal);
  if (flags.detach) {
    for (const note of checkBackupDirectories(settings, true)) terminal.err(`Warning: ${note}\n`);
    // The identity is read here and handed to the run over a pipe: never a file, argv or log.
    const stdin = flags['identity-stdin'] ? `${(await readIdentityFromStdin()).join('\n')}\n` : undefined;
    const record = await startDetachedRun({
      dir: settings.dir,
      logFile: join(settings.logDir, deployLogName),
      args: argvOf(flags, ['detach']),
      stdin,
    });
    terminal.out(`${JSON.stringify(record)}\n`);
    return;
  }
  const runId = flags['run-id'];
  if (typeof runId === 'string') return recordRunOutcome(settings.dir, checkRunId(runId), () => runOnNas(invocation));
  return runOnNas(invocation);
}

/** --status on the NAS: reconciles a half-done switch first (when no run holds the lock), then the slots and the last run. */
async function showStatus(settings: Settings, json: boolean, terminal: Terminal): Promise<void> {
  const log = new Logger({ file: join(settings.logDir, deployLogName) });
  const docker = locateDocker({ explicit: settings.docker });
  const $ = createShell();
  const reconciled = await reconcileIfIdle({ dir: settings.dir, docker, $, log }, 'deploy-to-qnap --status');
  const replication = await reconcileReplicationIfIdle($, docker, settings.dir, log, 'deploy-to-qnap --status');
  const restarted = await startInterruptedStopsIfIdle({ dir: settings.dir, docker, $, log }, 'deploy-to-qnap --status');
  const state = readDeployState(settings.dir);
  const record = latestRun(settings.dir);
  const run = record && { ...record, outcome: runOutcome(settings.dir, record) };
  const leftovers = await replicationLeftovers($, {
    docker,
    container: settings.container,
    user: settings.dbUser,
    database: settings.dbName,
  });
  // A running deployment's own slot is journalled too; only one no run builds any more is left over.
  const staged = run && !run.outcome ? undefined : readStagingJournal(settings.dir);
  if (json)
    return void terminal.out(
      `${JSON.stringify({ ...state, run, reconciled, replication, restarted, replicationLeftovers: leftovers, leftoverSlot: staged?.project ?? null }, null, 2)}\n`,
    );
  const line = (label: string, slot: typeof state.live) =>
    `${label}: ${slot ? `${slot.project} since ${slot.since} (${slot.containers.map((c) => c.name).join(', ')})` : 'none'}`;
  const last = state.lastDeploy;
  const outcome = run?.outcome;
  terminal.out(
    [
      ...(reconciled.action === 'busy'
        ? ['A switch journal is pending and another run holds the lock: it is reconciled once that run ends.']
        : []),
      ...(replication === 'busy'
        ? [
            'An interrupted online deployment is journalled and another run holds the lock: it is put back once that run ends.',
          ]
        : []),
      ...(restarted === 'busy'
        ? [
            'An interrupted deployment had stopped live containers and another run holds the lock: they start once it ends.',
          ]
        : typeof restarted === 'object' && restarted.started.length
          ? [`An interrupted deployment had stopped live containers: started ${restarted.started.join(', ')} again.`]
          : restarted === 'failed'
            ? [
                `An interrupted deployment had stopped live containers, and starting them failed (see ${join(settings.logDir, deployLogName)}); the log names them, and the next backup or --status tries again.`,
              ]
            : []),
      ...(replication === 'reconciled'
        ? ['An interrupted online deployment was put back: its replication objects dropped, REPLICA IDENTITY restored.']
        : []),
      ...(replication === 'failed'
        ? [
            `An interrupted online deployment could not be put back (see ${join(settings.logDir, deployLogName)}); the next deployment tries again.`,
          ]
        : []),
      line('Live', state.live),
      line('Previous (for --rollback)', state.previous),
      last
        ? `Last deployment: ${last.time} ${last.mode}${last.outcome ? ` ${last.outcome}` : ''} ${last.ok ? 'succeeded' : 'FAILED'}${last.error ? ` (${last.error})` : ''}${last.backupUsed ? `, restored ${last.backupUsed}${last.backupAgeSeconds !== null ? ` (${formatAge(last.backupAgeSeconds)} old)` : ''}` : ''}${last.downtimeMs !== null ? `, writers down ${(last.downtimeMs / 1000).toFixed(1)} s` : ''}${last.pinnedBackup ? `, pinned backup ${last.pinnedBackup}` : ''}`
        : 'Last deployment: none',
      ...(last?.warnings ?? []).map((w) => `  warning: ${w}`),
      ...leftovers.map(
        (l) =>
          `LEFTOVER of an interrupted online deployment on ${settings.container}: ${l}; the next deployment drops it (or drop it by hand now: it keeps WAL until the disk is full)`,
      ),
      ...(staged
        ? [
            `LEFTOVER slot ${staged.project} of an interrupted deployment (deploy/staging.json): the next deployment removes it, with its volumes${staged.folders.length ? ` and ${staged.folders.join(', ')}` : ''}, unless it serves`,
          ]
        : []),
      run
        ? `Last run: ${run.runId} (${run.command}) started ${run.started}: ${outcome ? (outcome.died ? `DIED: ${outcome.error}` : `ended with exit ${outcome.exitCode}${outcome.error ? ` (${outcome.error})` : ''}`) : `running (pid ${run.pid}); follow it: deploy-to-qnap --follow ${run.runId}`}; log ${run.logFile}`
        : 'Last run: none',
      '',
    ].join('\n'),
  );
}

/** The A-B deployment, --rollback or --dry-run on the NAS itself. */
async function runOnNas({ flags, settings, json, dryRun, terminal }: Invocation): Promise<void> {
  const identities = flags['identity-stdin']
    ? await readIdentityFromStdin()
    : settings.ageIdentity
      ? readIdentityFile(settings.ageIdentity)
      : undefined;
  const healthTimeout = Number(flags['health-timeout'] ?? '180');
  if (!Number.isInteger(healthTimeout) || healthTimeout < 1)
    throw new UsageError(`invalid --health-timeout '${flags['health-timeout']}': a whole number of seconds`);
  // On the NAS the compose file is the one deploy uploaded beside the executables.
  const composeFile = resolve(String(flags['compose-file'] ?? join(settings.dir, nasComposeFileName)));
  // The folders it writes in (deploy/, logs, backups) are checked like the backup's.
  const folderNotes = checkBackupDirectories(settings, !dryRun);
  const log = new Logger({ file: dryRun ? undefined : join(settings.logDir, deployLogName) });
  for (const note of folderNotes) log.warn(note);
  const docker = locateDocker({ explicit: settings.docker });
  const $ = createShell();
  const dbService = String(flags['db-service'] ?? 'db');
  const serviceImages = parseServiceImages(flags['service-images'] as string | undefined);
  if (dryRun) {
    const plan = await planDeploy({
      settings,
      docker,
      $,
      log,
      composeFile,
      dbService,
      serviceImages,
      freeze: flags['no-freeze'] !== true,
      offline: flags.offline === true,
      acceptOlderBackup: flags['accept-older-backup'] === true,
      freshFromBackup: flags['fresh-from-backup'] === true,
      healthTimeoutMs: healthTimeout * 1000,
    });
    terminal.out(json ? `${JSON.stringify({ plan }, null, 2)}\n` : `Plan (nothing is changed):\n${plan.join('\n')}\n`);
    return;
  }
  if (flags.rollback) {
    const result = await rollbackDeployment({ settings, docker, $, log, healthTimeoutMs: healthTimeout * 1000 });
    if (json) terminal.out(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const result = await runDeploy({
    settings,
    docker,
    $,
    log,
    composeFile,
    dbService,
    freeze: flags['no-freeze'] !== true,
    offline: flags.offline === true,
    acceptOlderBackup: flags['accept-older-backup'] === true,
    freshFromBackup: flags['fresh-from-backup'] === true,
    healthTimeoutMs: healthTimeout * 1000,
    identities,
    serviceImages,
    // The self test (a backup --dry-run) is skipped: the deployment has just proven the
    // database healthy and, over a live slot, backed it up.
    installCron: async (cronLog) => {
      const cron = await installBackupCron({
        settings,
        $,
        env: process.env,
        root: resolveRoot(flags.root as string | undefined),
        binary: undefined,
        drill: true,
        skipTest: true,
        dryRun: false,
        progress: (line) => cronLog.info(line),
      });
      cronLog.info(`Backup cron job ${cron.changed ? 'installed' : 'already current'} in ${cron.crontab}`);
    },
  });
  const summary = [
    `Deployment ${{ first: '(first)', ab: 'A-B', fresh: '(fresh from backup)', rollback: '(rollback)' }[result.mode]} ${result.warnings?.length ? 'switched, with warnings,' : 'succeeded'} in ${(result.totalMs / 1000).toFixed(1)} s`,
    result.backupUsed
      ? `restored ${result.backupUsed}${result.backupAgeSeconds !== null ? ` (${formatAge(result.backupAgeSeconds)} old)` : ''}, fingerprint ${result.fingerprint}`
      : 'no restore (first deployment)',
    result.downtimeMs !== null ? `writers were down ${(result.downtimeMs / 1000).toFixed(1)} s` : undefined,
    ...result.attempts.filter((a) => !a.ok).map((a) => `lost: ${a.file}: ${a.reason}`),
    ...(result.warnings ?? []).map((w) => `warning: ${w}`),
    `logs: ${join(settings.logDir, deployLogName)}`,
  ].filter(Boolean);
  log.info(summary.join('; '));
  if (json) terminal.out(`${JSON.stringify(result, null, 2)}\n`);
}

/** The identity the workstation sends on standard input (--identity-stdin); kept in memory only. */
async function readIdentityFromStdin(): Promise<string[]> {
  const text = await readSecretFromStdin('--identity-stdin', {
    what: 'the identity',
    advice: 'deploy-to-qnap on the workstation sends it; use --identity FILE to run it by hand.',
    expected: 'an age identity file',
  });
  try {
    return parseIdentities(text);
  } catch (error) {
    throw new UsageError(`--identity-stdin: ${(error as Error).message}`);
  }
}
