import { existsSync } from 'node:fs';
import { parseIdentities, readIdentityFile } from '../lib/age.ts';
import { join, resolve } from 'node:path';
import { deployConfigFlags, loadDeployConfig } from '../lib/deploy-config.ts';
import { defineCommand } from '../lib/command.ts';
import { UsageError } from '../lib/errors.ts';

export const deployLogName = 'deploy.log';

export const deployToQnap = defineCommand(
  {
    name: 'deploy-to-qnap',
    usage: '[options]',
    description: [
      'From a workstation: reads .qnap-deploy.env (QNAP_IP, QNAP_USER, QNAP_PROJECT_DIR, DOCKER_COMPOSE_FILE,',
      'QNAP_SSH_KEY, QNAP_SSH_PORT), checks the NAS over SSH, uploads the executables for its architecture,',
      'the compose file and planetarion.env (if present here), and runs the A-B deployment there.',
      'With --local, runs the A-B deployment on this machine (the NAS): with no live deployment it',
      'starts the stack; with one, it stages the new database beside the live one, stops the live',
      'writers, takes a fresh backup and restores it into the new database as it is written, proves its',
      'fingerprint (falling back to older backups), starts the new services, waits for their health checks and',
      'switches the container names. Any failure before the switch leaves the live slot serving.',
      'Encrypted backups (PLANETARION_AGE_RECIPIENTS on the NAS): give the identity on the workstation',
      '(--identity FILE or PLANETARION_AGE_IDENTITY); it is sent over the SSH session\'s standard input',
      '(the NAS side reads it with --identity-stdin) and never written to the NAS or put in argv or a log.',
    ].join('\n'),
    flags: [
      { name: 'local', type: 'boolean', description: 'run the A-B flow on this machine (what the workstation runs on the NAS)' },
      { name: 'db-service', type: 'string', valueName: 'NAME', description: 'the database service in the compose file', defaultText: 'db' },
      { name: 'no-freeze', type: 'boolean', description: 'keep the live writers serving; restore the newest existing backup (zero disruption, not zero loss)' },
      { name: 'accept-older-backup', type: 'boolean', description: 'switch even when only a backup older than the fresh one restores' },
      { name: 'health-timeout', type: 'string', valueName: 'SECONDS', description: 'how long new containers may take to become healthy', defaultText: '180' },
      { name: 'status', type: 'boolean', description: 'show the live and previous slots' },
      { name: 'rollback', type: 'boolean', description: 'make the previous slot live again (the current one is backed up first)' },
      { name: 'root', type: 'string', valueName: 'DIR', description: 'with --local: the filesystem root for the cron job (/etc/config/crontab), for tests and images', defaultText: '/' },
      { name: 'identity-stdin', type: 'boolean', description: 'with --local: read the age identity from standard input (what the workstation sends over SSH)' },
      { name: 'image', type: 'string', valueName: 'NAMES', description: 'images to ship to the NAS first (docker save | ssh docker load), comma-separated' },
      ...deployConfigFlags,
    ],
    settings: ['dir', 'backupDir', 'logDir', 'container', 'dbUser', 'dbName', 'keep', 'schedule', 'ageRecipients', 'ageIdentity', 'docker'],
    dryRun: true,
    maxPositionals: 0,
    examples: [
      'deploy-to-qnap                               # on the workstation, with .qnap-deploy.env here',
      'deploy-to-qnap --identity ~/.config/planetarion/age-key.txt   # encrypted backups',
      'deploy-to-qnap --dry-run',
      'deploy-to-qnap --image planetarion-backend:latest,planetarion-frontend:latest',
      'deploy-to-qnap --local                       # on the NAS, in /share/CACHEDEV1_DATA/planetarion',
      'deploy-to-qnap --local --no-freeze --json',
      'deploy-to-qnap --status',
      'deploy-to-qnap --rollback --local',
    ],
  },
  async ({ flags, settings, json, dryRun }) => {
    if (flags['identity-stdin'] && !flags.local) throw new UsageError('--identity-stdin is for the NAS-side run (--local); on the workstation use --identity FILE');
    if (!flags.local) {
      // Loaded here, not at the top: --help and --version answer without them (scripts/cli.ts).
      const { runRemoteDeploy } = await import('../lib/deploy-remote.ts');
      // The workstation: the NAS-side run gets the flags that concern it.
      const remoteArgs: string[] = [];
      for (const name of ['no-freeze', 'accept-older-backup', 'status', 'rollback', 'json', 'dry-run']) if (flags[name] === true) remoteArgs.push(`--${name}`);
      for (const name of ['db-service', 'health-timeout', 'container', 'db-user', 'db-name', 'keep', 'schedule', 'root']) {
        if (typeof flags[name] === 'string') remoteArgs.push(`--${name}`, flags[name] as string);
      }
      const settingsFile = existsSync(resolve('planetarion.env')) ? resolve('planetarion.env') : undefined;
      await runRemoteDeploy({
        config: loadDeployConfig({ cwd: process.cwd(), env: process.env, flags }),
        remoteArgs,
        images: String(flags.image ?? '').split(',').map((i) => i.trim()).filter(Boolean),
        settingsFile,
        upload: !flags.status && !flags.rollback,
        dryRun,
        say: (line) => process.stderr.write(`${line}\n`),
        // Read (and checked) here, on the workstation; only a restore needs it.
        identity: settings.ageIdentity && !flags.status && !flags.rollback ? readIdentityFile(settings.ageIdentity).join('\n') + '\n' : undefined,
      });
      return;
    }
    const [{ formatAge }, { installBackupCron, resolveRoot }, { readDeployState }, { planDeploy, rollbackDeployment, runDeploy }, { locateDocker }, { Logger }, { createShell }] = await Promise.all([
      import('../lib/backup-status.ts'),
      import('../lib/cron-setup.ts'),
      import('../lib/deploy-state.ts'),
      import('../lib/deploy.ts'),
      import('../lib/docker-binary.ts'),
      import('../lib/log.ts'),
      import('../lib/shell.ts'),
    ]);
    if (flags.status) {
      const state = readDeployState(settings.dir);
      if (json) return void process.stdout.write(JSON.stringify(state, null, 2) + '\n');
      const line = (label: string, slot: typeof state.live) => `${label}: ${slot ? `${slot.project} since ${slot.since} (${slot.containers.map((c) => c.name).join(', ')})` : 'none'}`;
      const last = state.lastDeploy;
      process.stdout.write(
        [
          line('Live', state.live),
          line('Previous (for --rollback)', state.previous),
          last ? `Last deployment: ${last.time} ${last.ok ? 'succeeded' : 'FAILED'}${last.backupUsed ? `, restored ${last.backupUsed}${last.backupAgeSeconds !== null ? ` (${formatAge(last.backupAgeSeconds)} old)` : ''}` : ''}${last.downtimeMs !== null ? `, writers down ${(last.downtimeMs / 1000).toFixed(1)} s` : ''}` : 'Last deployment: none',
          '',
        ].join('\n'),
      );
      return;
    }
    const identities = flags['identity-stdin'] ? await readIdentityFromStdin() : settings.ageIdentity ? readIdentityFile(settings.ageIdentity) : undefined;
    const healthTimeout = Number(flags['health-timeout'] ?? '180');
    if (!Number.isInteger(healthTimeout) || healthTimeout < 1) throw new UsageError(`invalid --health-timeout '${flags['health-timeout']}': a whole number of seconds`);
    // On the NAS the compose file is the one deploy uploaded beside the executables.
    const composeFile = resolve(String(flags['compose-file'] ?? join(settings.dir, 'docker-compose.qnap.yml')));
    const log = new Logger({ file: dryRun ? undefined : join(settings.logDir, deployLogName) });
    const docker = locateDocker({ explicit: settings.docker });
    const $ = createShell();
    const dbService = String(flags['db-service'] ?? 'db');
    if (dryRun) {
      const plan = await planDeploy({ settings, docker, $, log, composeFile, dbService, freeze: flags['no-freeze'] !== true, acceptOlderBackup: flags['accept-older-backup'] === true, healthTimeoutMs: healthTimeout * 1000 });
      process.stdout.write(json ? JSON.stringify({ plan }, null, 2) + '\n' : `Plan (nothing is changed):\n${plan.join('\n')}\n`);
      return;
    }
    if (flags.rollback) {
      const result = await rollbackDeployment({ settings, docker, $, log, healthTimeoutMs: healthTimeout * 1000 });
      if (json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
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
      acceptOlderBackup: flags['accept-older-backup'] === true,
      healthTimeoutMs: healthTimeout * 1000,
      identities,
      // The self test (a backup --dry-run) is skipped: the deployment has just proven the
      // database healthy and, over a live slot, backed it up.
      installCron: async (cronLog) => {
        const cron = await installBackupCron({ settings, $, env: process.env, root: resolveRoot(flags.root as string | undefined), binary: undefined, drill: true, skipTest: true, dryRun: false, progress: (line) => cronLog.info(line) });
        cronLog.info(`Backup cron job ${cron.changed ? 'installed' : 'already current'} in ${cron.crontab}`);
      },
    });
    const summary = [
      `Deployment ${result.mode === 'first' ? '(first)' : 'A-B'} succeeded in ${(result.totalMs / 1000).toFixed(1)} s`,
      result.backupUsed ? `restored ${result.backupUsed}${result.backupAgeSeconds !== null ? ` (${formatAge(result.backupAgeSeconds)} old)` : ''}, fingerprint ${result.fingerprint}` : 'no restore (first deployment)',
      result.downtimeMs !== null ? `writers were down ${(result.downtimeMs / 1000).toFixed(1)} s` : undefined,
      ...result.attempts.filter((a) => !a.ok).map((a) => `lost: ${a.file}: ${a.reason}`),
      `logs: ${join(settings.logDir, deployLogName)}`,
    ].filter(Boolean);
    log.info(summary.join('; '));
    if (json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  },
);

/** The identity the workstation sends on standard input (--identity-stdin); kept in memory only. */
async function readIdentityFromStdin(): Promise<string[]> {
  if (process.stdin.isTTY) throw new UsageError('--identity-stdin needs the identity on standard input, not a terminal', 'deploy-to-qnap on the workstation sends it; use --identity FILE to run it by hand.');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) throw new UsageError('--identity-stdin: more than 64 KiB on standard input; expected an age identity file');
    chunks.push(chunk);
  }
  try {
    return parseIdentities(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new UsageError(`--identity-stdin: ${(error as Error).message}`);
  }
}
