// deploy-to-qnap: on the workstation it checks the NAS, uploads and starts the NAS-side run with
// the flags that concern it; with --local it is that run (deploy-on-nas.ts). scripts/deploy-to-qnap.ts
// holds the spec and the help.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { readIdentityFile } from '../age.ts';
import type { Invocation } from '../cli/command.ts';
import { UsageError } from '../errors.ts';
import { configFileName } from '../paths.ts';
import { loadDeployConfig } from '../remote/config.ts';
import { runRemoteDeploy } from '../remote/run.ts';

/** The flags of the workstation's command line that the NAS-side run gets too. */
const forwardedSwitches = [
  'no-freeze',
  'offline',
  'accept-older-backup',
  'fresh-from-backup',
  'status',
  'rollback',
  'json',
  'dry-run',
];
const forwardedValues = [
  'db-service',
  'health-timeout',
  'container',
  'db-user',
  'db-name',
  'keep',
  'schedule',
  'replication-stall',
  'root',
];

/**
 * The command's settings whose flags stay on the workstation: this machine's folders and docker
 * (the NAS has its own, in its planetarion.env), the identity read here and sent on stdin, and the
 * recipients, which the NAS's planetarion.env holds. Every other setting's flag is forwarded.
 */
export const workstationSettings = ['dir', 'backupDir', 'logDir', 'ageRecipients', 'ageIdentity', 'docker'];

/** The NAS-side run's arguments for the workstation's flags. */
export function forwardedArgs(flags: Invocation['flags']): string[] {
  const args: string[] = [];
  for (const name of forwardedSwitches) if (flags[name] === true) args.push(`--${name}`);
  for (const name of forwardedValues)
    if (typeof flags[name] === 'string') args.push(`--${name}`, flags[name] as string);
  return args;
}

export async function deployToQnapCommand(invocation: Invocation): Promise<void> {
  const { flags, settings, dryRun, terminal } = invocation;
  if (flags['identity-stdin'] && !flags.local)
    throw new UsageError('--identity-stdin is for the NAS-side run (--local); on the workstation use --identity FILE');
  if (flags.local) return (await import('./deploy-on-nas.ts')).nasDeployCommand(invocation);
  const settingsFile = existsSync(resolve(configFileName)) ? resolve(configFileName) : undefined;
  await runRemoteDeploy({
    config: loadDeployConfig({ cwd: process.cwd(), env: process.env, flags }),
    remoteArgs: forwardedArgs(flags),
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
    say: (line) => terminal.err(`${line}\n`),
    // Read (and checked) here, on the workstation; only a restore needs it.
    identity:
      settings.ageIdentity && !flags.status && !flags.rollback && !flags.follow
        ? `${readIdentityFile(settings.ageIdentity).join('\n')}\n`
        : undefined,
  });
}
