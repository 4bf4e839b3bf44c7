import { existsSync } from 'node:fs';
import { parseIdentities, readIdentityFile } from '../lib/age.ts';
import { join, resolve } from 'node:path';
import { deployConfigFlags, loadDeployConfig } from '../lib/deploy-config.ts';
import { runRemoteDeploy } from '../lib/deploy-remote.ts';
import { defineCommand, type Invocation } from '../lib/command.ts';
import {
  argvOf,
  checkRunId,
  followRun,
  latestRun,
  recordRunOutcome,
  runOutcome,
  startDetachedRun,
} from '../lib/deploy-detach.ts';
import { reconcileReplicationIfIdle, replicationLeftovers } from '../lib/deploy-replication.ts';
import { reconcileIfIdle } from '../lib/deploy-switch.ts';
import type { Settings } from '../lib/settings.ts';
import { readDeployState } from '../lib/deploy-state.ts';
import { planDeploy, rollbackDeployment, runDeploy } from '../lib/deploy.ts';
import { locateDocker } from '../lib/docker-binary.ts';
import { parseServiceImages } from '../lib/deploy-images.ts';
import { UsageError } from '../lib/errors.ts';
import { Logger } from '../lib/log.ts';
import { createShell } from '../lib/shell.ts';
import { formatAge } from '../lib/backup-status.ts';
import { checkBackupDirectories } from '../lib/backup.ts';
import { installBackupCron, resolveRoot } from '../lib/cron-setup.ts';

export const deployLogName = 'deploy.log';

export const deployToQnap = defineCommand(
  {
    name: 'deploy-to-qnap',
    usage: '[options]',
    description: [
      'From a workstation: reads .qnap-deploy.env (QNAP_IP, QNAP_USER, QNAP_PROJECT_DIR, DOCKER_COMPOSE_FILE,',
      'QNAP_SSH_KEY, QNAP_SSH_PORT), checks the NAS over SSH, uploads the executables for its architecture,',
      "the compose file and planetarion.env (if present here: merged into the NAS's, whose own keys are kept; a key",
      'it would change needs --replace-settings), and runs the A-B deployment there.',
      'With --local, runs the A-B deployment on this machine (the NAS): with no live deployment it',
      'starts the stack; with one, it stages the new database beside the live one and fills it. Online when the',
      "live slot is one of this tool's (its socket folder on a named volume, wal_level=logical; every slot it",
      'creates has both): PostgreSQL logical replication fills it while the game runs, then the live writers',
      'stop and the database is fenced only for the final catch-up, the sequences and the fingerprint proof.',
      'Otherwise (or with --offline) it stops the live writers, takes a fresh backup and restores it into the',
      'new database as it is written, and proves its fingerprint (older backups only with --accept-older-backup).',
      'Then it starts the new services, waits for their health checks and',
      'switches the container names. The live deployment is found by what runs (the DB container name, or the',
      'compose labels of a stack the old scripts started); one that exists but does not run is refused (start it,',
      "or --fresh-from-backup). The new slot's database gets storage of its own (a driver_opts bind folder gets a",
      'sibling <device>-<slot>, 0700; a bind mount or external volume a volume of the slot); a layout that cannot be',
      'isolated is refused (exit 2). The freeze fences the live database: other sessions are ended and its tables',
      'locked against writes. Any failure, or SIGINT/SIGTERM/SIGHUP, before the switch leaves the live slot serving.',
      "Services with build: and no image: are built on the workstation for the NAS's architecture, tagged by",
      'their content, and shipped (docker save | ssh docker load; nothing travels when the NAS has the tag), or',
      'built on the NAS with --build-on-nas; the new slot runs those images. Relative bind mounts (./src) are',
      'synced to <dir>/deploy/sync (changed files only; not .git, node_modules, __pycache__) and each slot',
      "mounts its own copy, so the live slot's code does not change before the switch. The new database",
      'publishes no ports (the live one holds them until the release; nor after the switch); writers keep theirs.',
      '--dry-run prints the phases the run would execute, from the current state, and every deviation from the file.',
      'From the workstation, the deployment and --rollback run on the NAS detached from the SSH session',
      '(their own session; output to <dir>/logs/deploy.log): the workstation follows the log and reports the',
      'outcome; if the connection drops it reconnects, and if it cannot, the NAS side goes on regardless',
      '(follow it again with --follow RUN, or see --status). The container renames of the switch are journalled',
      'in <dir>/deploy/switch.json; every later deploy-to-qnap run (--status, --rollback too) and backup-database',
      'first finishes a switch a crash interrupted (the old slot gave up its names and the new one serves) or',
      'undoes it (the old slot live and started again). After the switch, failures (cron, clean-up) only warn.',
      'An online fill records what it changes on the live database (REPLICA IDENTITY FULL, publication,',
      'replication slots) in <dir>/deploy/replication.json first; a later run (--status when idle) puts it back.',
      '--rollback stops the current writers, takes a backup and pins it in <backups>/pinned/ (rotation keeps',
      'it; it is not restored into the previous slot), starts the previous slot and switches only once it is',
      'healthy; if it does not become healthy, the current writers start again and the state says so.',
      'Encrypted backups (PLANETARION_AGE_RECIPIENTS on the NAS): give the identity on the workstation',
      "(--identity FILE or PLANETARION_AGE_IDENTITY); it is sent over the SSH session's standard input",
      '(the NAS side reads it with --identity-stdin) and never written to the NAS or put in argv or a log.',
    ].join('\n'),
    flags: [
      {
        name: 'local',
        type: 'boolean',
        description: 'run the A-B flow on this machine (what the workstation runs on the NAS)',
      },
      {
        name: 'db-service',
        type: 'string',
        valueName: 'NAME',
        description: 'the database service in the compose file',
        defaultText: 'db',
      },
      {
        name: 'no-freeze',
        type: 'boolean',
        description:
          'keep the live writers serving until the switch (which still stops the old containers and starts the new ones: a short outage all the same); restore the newest existing backup, so every write after it is lost',
      },
      {
        name: 'offline',
        type: 'boolean',
        description:
          'fill the new slot from a fresh backup under the freeze even when it could be filled online by logical replication',
      },
      {
        name: 'accept-older-backup',
        type: 'boolean',
        description:
          'switch even when only a backup older than the fresh one restores (without it, a failed fresh backup or restore aborts at once)',
      },
      {
        name: 'fresh-from-backup',
        type: 'boolean',
        description:
          'the deployment exists but does not run (its DB container stopped or removed, its volumes or backups left): restore the newest backup into a fresh deployment, proven like an A-B one',
      },
      {
        name: 'health-timeout',
        type: 'string',
        valueName: 'SECONDS',
        description: 'how long new containers may take to become healthy',
        defaultText: '180',
      },
      {
        name: 'status',
        type: 'boolean',
        description:
          'show the live and previous slots, the last deployment and the last run (a half-done switch is reconciled first)',
      },
      {
        name: 'rollback',
        type: 'boolean',
        description: 'make the previous slot live again (the current writers stop and their backup is pinned first)',
      },
      {
        name: 'root',
        type: 'string',
        valueName: 'DIR',
        description: 'with --local: the filesystem root for the cron job (/etc/config/crontab), for tests and images',
        defaultText: '/',
      },
      {
        name: 'identity-stdin',
        type: 'boolean',
        description: 'with --local: read the age identity from standard input (what the workstation sends over SSH)',
      },
      {
        name: 'replace-settings',
        type: 'boolean',
        description:
          "put this planetarion.env on the NAS as it is, dropping or changing the NAS's keys (without it, a deploy that would change one is refused and shows the difference)",
      },
      {
        name: 'image',
        type: 'string',
        valueName: 'NAMES',
        description: 'images to ship to the NAS first (docker save | ssh docker load), comma-separated',
      },
      {
        name: 'build-on-nas',
        type: 'boolean',
        description:
          "services with build: are built on the NAS from their synced build context, not on this workstation for the NAS's architecture and shipped",
      },
      {
        name: 'service-images',
        type: 'string',
        valueName: 'SERVICE=IMAGE,...',
        description: 'with --local: the images built for the services with build: (set by the workstation)',
      },
      {
        name: 'follow',
        type: 'string',
        valueName: 'RUN',
        description: "follow a detached run's log until it ends and report its outcome (the run ID is in --status)",
      },
      {
        name: 'detach',
        type: 'boolean',
        description:
          'with --local: start the run in a session of its own, print its record and return (what the workstation does)',
      },
      {
        name: 'from',
        type: 'string',
        valueName: 'BYTES',
        description: "with --follow: the log offset to follow from [default: the run's start]",
      },
      {
        name: 'run-id',
        type: 'string',
        valueName: 'RUN',
        description: 'with --local: the ID a detached run records its result under (set by --detach)',
      },
      ...deployConfigFlags,
    ],
    settings: [
      'dir',
      'backupDir',
      'logDir',
      'container',
      'dbUser',
      'dbName',
      'keep',
      'schedule',
      'ageRecipients',
      'ageIdentity',
      'docker',
      'replicationStall',
    ],
    dryRun: true,
    maxPositionals: 0,
    examples: [
      'deploy-to-qnap                               # on the workstation, with .qnap-deploy.env here',
      'deploy-to-qnap --identity ~/.config/planetarion/age-key.txt   # encrypted backups',
      'deploy-to-qnap --dry-run',
      'deploy-to-qnap --image planetarion-backend:latest,planetarion-frontend:latest',
      'deploy-to-qnap --build-on-nas                # build the services with build: on the NAS',
      'deploy-to-qnap --local                       # on the NAS, in /share/CACHEDEV1_DATA/planetarion',
      'deploy-to-qnap --local --no-freeze --json',
      'deploy-to-qnap --status',
      'deploy-to-qnap --rollback --local',
      'deploy-to-qnap --follow 20261130_150102-a1b2c3   # follow a NAS-side run again after a lost connection',
    ],
  },
  async ({ flags, settings, json, dryRun }) => {
    if (flags['identity-stdin'] && !flags.local)
      throw new UsageError(
        '--identity-stdin is for the NAS-side run (--local); on the workstation use --identity FILE',
      );
    if (!flags.local) {
      // The workstation: the NAS-side run gets the flags that concern it.
      const remoteArgs: string[] = [];
      for (const name of [
        'no-freeze',
        'offline',
        'accept-older-backup',
        'fresh-from-backup',
        'status',
        'rollback',
        'json',
        'dry-run',
      ])
        if (flags[name] === true) remoteArgs.push(`--${name}`);
      for (const name of [
        'db-service',
        'health-timeout',
        'container',
        'db-user',
        'db-name',
        'keep',
        'schedule',
        'root',
      ]) {
        if (typeof flags[name] === 'string') remoteArgs.push(`--${name}`, flags[name] as string);
      }
      const settingsFile = existsSync(resolve('planetarion.env')) ? resolve('planetarion.env') : undefined;
      await runRemoteDeploy({
        config: loadDeployConfig({ cwd: process.cwd(), env: process.env, flags }),
        remoteArgs,
        dbService: (flags['db-service'] as string | undefined) ?? 'db',
        images: String(flags.image ?? '')
          .split(',')
          .map((i) => i.trim())
          .filter(Boolean),
        buildOnNas: flags['build-on-nas'] === true,
        settingsFile,
        replaceSettings: flags['replace-settings'] === true,
        upload: !flags.status && !flags.rollback && !flags.follow,
        detach: !flags.status && !dryRun,
        follow: flags.follow as string | undefined,
        dryRun,
        say: (line) => process.stderr.write(`${line}\n`),
        // Read (and checked) here, on the workstation; only a restore needs it.
        identity:
          settings.ageIdentity && !flags.status && !flags.rollback && !flags.follow
            ? `${readIdentityFile(settings.ageIdentity).join('\n')}\n`
            : undefined,
      });
      return;
    }
    if (flags.follow) {
      const from = flags.from === undefined ? undefined : Number(flags.from);
      if (from !== undefined && !(Number.isInteger(from) && from >= 0))
        throw new UsageError(`invalid --from '${flags.from}': a byte offset (a whole number)`);
      await followRun(settings.dir, String(flags.follow), from, process.stdout);
      return;
    }
    if (flags.status) return showStatus(settings, json);
    if (flags.detach) {
      for (const note of checkBackupDirectories(settings, true)) process.stderr.write(`Warning: ${note}\n`);
      // The identity is read here and handed to the run over a pipe: never a file, argv or log.
      const stdin = flags['identity-stdin'] ? `${(await readIdentityFromStdin()).join('\n')}\n` : undefined;
      const record = await startDetachedRun({
        dir: settings.dir,
        logFile: join(settings.logDir, deployLogName),
        args: argvOf(flags, ['detach']),
        stdin,
      });
      process.stdout.write(`${JSON.stringify(record)}\n`);
      return;
    }
    const runId = flags['run-id'];
    if (typeof runId === 'string')
      return recordRunOutcome(settings.dir, checkRunId(runId), () => runOnNas({ flags, settings, json, dryRun }));
    return runOnNas({ flags, settings, json, dryRun });
  },
);

/** --status on the NAS: reconciles a half-done switch first (when no run holds the lock), then the slots and the last run. */
async function showStatus(settings: Settings, json: boolean): Promise<void> {
  const log = new Logger({ file: join(settings.logDir, deployLogName) });
  const reconciled = await reconcileIfIdle(
    { dir: settings.dir, docker: locateDocker({ explicit: settings.docker }), $: createShell(), log },
    'deploy-to-qnap --status',
  );
  const replication = await reconcileReplicationIfIdle(
    createShell(),
    locateDocker({ explicit: settings.docker }),
    settings.dir,
    log,
    'deploy-to-qnap --status',
  );
  const state = readDeployState(settings.dir);
  const record = latestRun(settings.dir);
  const run = record && { ...record, outcome: runOutcome(settings.dir, record) };
  const leftovers = await replicationLeftovers(createShell(), {
    docker: locateDocker({ explicit: settings.docker }),
    container: settings.container,
    user: settings.dbUser,
    database: settings.dbName,
  });
  if (json)
    return void process.stdout.write(
      `${JSON.stringify({ ...state, run, reconciled, replication, replicationLeftovers: leftovers }, null, 2)}\n`,
    );
  const line = (label: string, slot: typeof state.live) =>
    `${label}: ${slot ? `${slot.project} since ${slot.since} (${slot.containers.map((c) => c.name).join(', ')})` : 'none'}`;
  const last = state.lastDeploy;
  const outcome = run?.outcome;
  process.stdout.write(
    [
      ...(reconciled.action === 'busy'
        ? ['A switch journal is pending and another run holds the lock: it is reconciled once that run ends.']
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
      run
        ? `Last run: ${run.runId} (${run.command}) started ${run.started}: ${outcome ? (outcome.died ? `DIED: ${outcome.error}` : `ended with exit ${outcome.exitCode}${outcome.error ? ` (${outcome.error})` : ''}`) : `running (pid ${run.pid}); follow it: deploy-to-qnap --follow ${run.runId}`}; log ${run.logFile}`
        : 'Last run: none',
      '',
    ].join('\n'),
  );
}

/** The A-B deployment, --rollback or --dry-run on the NAS itself. */
async function runOnNas({
  flags,
  settings,
  json,
  dryRun,
}: Pick<Invocation, 'flags' | 'settings' | 'json' | 'dryRun'>): Promise<void> {
  const identities = flags['identity-stdin']
    ? await readIdentityFromStdin()
    : settings.ageIdentity
      ? readIdentityFile(settings.ageIdentity)
      : undefined;
  const healthTimeout = Number(flags['health-timeout'] ?? '180');
  if (!Number.isInteger(healthTimeout) || healthTimeout < 1)
    throw new UsageError(`invalid --health-timeout '${flags['health-timeout']}': a whole number of seconds`);
  // On the NAS the compose file is the one deploy uploaded beside the executables.
  const composeFile = resolve(String(flags['compose-file'] ?? join(settings.dir, 'docker-compose.qnap.yml')));
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
    process.stdout.write(
      json ? `${JSON.stringify({ plan }, null, 2)}\n` : `Plan (nothing is changed):\n${plan.join('\n')}\n`,
    );
    return;
  }
  if (flags.rollback) {
    const result = await rollbackDeployment({ settings, docker, $, log, healthTimeoutMs: healthTimeout * 1000 });
    if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
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
  if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

/** The identity the workstation sends on standard input (--identity-stdin); kept in memory only. */
async function readIdentityFromStdin(): Promise<string[]> {
  if (process.stdin.isTTY)
    throw new UsageError(
      '--identity-stdin needs the identity on standard input, not a terminal',
      'deploy-to-qnap on the workstation sends it; use --identity FILE to run it by hand.',
    );
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024)
      throw new UsageError('--identity-stdin: more than 64 KiB on standard input; expected an age identity file');
    chunks.push(chunk);
  }
  try {
    return parseIdentities(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new UsageError(`--identity-stdin: ${(error as Error).message}`);
  }
}
