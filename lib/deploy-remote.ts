// deploy-to-qnap from a workstation: check the NAS over SSH, bring the matching executables,
// the compose file, the settings file and images there, then run the A-B flow on the NAS with
// the uploaded executable, its output streamed back.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DeployConfig } from './deploy-config.ts';
import { sshTargetOf } from './deploy-config.ts';
import { CliError, UsageError, type ExitCode } from './errors.ts';
import { availableBuilds, localBinRoot, probeNas, shipImage, uploadExecutables, uploadFile } from './nas-upload.ts';
import { applySettingsUpload, describeSettingsPlan, planSettingsUpload, settingsRefusal } from './settings-merge.ts';
import { Ssh } from './ssh.ts';
import { followRemoteRun, remoteRunRecord, runDetachedOnNas } from './deploy-follow.ts';

export interface RemoteDeployOptions {
  config: DeployConfig;
  /** Flags for the NAS-side run (`--local` and `--dir` are added here). */
  remoteArgs: string[];
  /** Images to ship with `docker save | ssh docker load`. */
  images: string[];
  /** The local settings file to upload as <dir>/planetarion.env, if any. */
  settingsFile: string | undefined;
  /** --replace-settings: the local settings file replaces the NAS's instead of being merged into it. */
  replaceSettings?: boolean;
  /** Only --status / --rollback / --follow: nothing is uploaded. */
  upload: boolean;
  /** Run it detached from the SSH session and follow its log (a deployment, --rollback). */
  detach: boolean;
  /** Only follow this detached run (`--follow ID`). */
  follow?: string;
  dryRun: boolean;
  /** Progress lines for the person at the workstation. */
  say: (line: string) => void;
  /**
   * The age identity file's keys, sent as the remote run's standard input (it reads them with
   * --identity-stdin): never in argv, a file on the NAS, or a log line.
   */
  identity?: string;
}

/** Runs the deployment on the NAS; resolves when the remote run succeeded, throws with its exit code otherwise. */
export async function runRemoteDeploy(options: RemoteDeployOptions): Promise<void> {
  const { config, say } = options;
  const dir = config.projectDir;
  const ssh = new Ssh(sshTargetOf(config), { log: say });
  const binRoot = await localBinRoot();
  say(`Connecting to ${config.user}@${config.host}:${config.sshPort} ...`);
  const nas = await probeNas(ssh, dir, availableBuilds(binRoot));
  say(`NAS: ${nas.machine}, kernel ${nas.kernel} -> ${nas.folder}; ${dir} ${nas.projectDirExists ? 'exists' : 'will be created'}`);
  const remoteCommand = [`${dir}/deploy-to-qnap`, '--local', '--dir', dir, ...options.remoteArgs, ...(options.identity ? ['--identity-stdin'] : [])];
  // A string is replayable, so the stream keeps its connection retries.
  const streamOptions = options.identity ? { stdin: options.identity } : {};

  if (options.upload) {
    if (!existsSync(config.composeFile)) {
      throw new UsageError(`the compose file ${config.composeFile} does not exist`, 'Set DOCKER_COMPOSE_FILE in .qnap-deploy.env or pass --compose-file.');
    }
    // Merged into the NAS's file, never overwriting it: a change needs --replace-settings (lib/settings-merge.ts).
    const settingsPath = `${dir}/planetarion.env`;
    const settings = options.settingsFile ? await planSettingsUpload(ssh, readFileSync(options.settingsFile, 'utf8'), settingsPath, options.replaceSettings === true) : undefined;
    for (const line of settings ? describeSettingsPlan(settings, settingsPath) : []) say(line);
    if (settings?.action === 'refuse' && !options.dryRun) throw settingsRefusal(settings, settingsPath);
    if (options.dryRun) {
      say(`Plan: upload ${join(binRoot, nas.folder)} to ${dir}/bin (skipped if SHA256SUMS matches), ${config.composeFile} to ${dir}/docker-compose.qnap.yml${options.settingsFile ? `, ${options.settingsFile} to ${dir}/planetarion.env` : ''}${options.images.length ? `, images ${options.images.join(', ')}` : ''}; then run on the NAS: ${ssh.describe(remoteCommand)}`);
      if (!(await ssh.run(['test', '-x', `${dir}/deploy-to-qnap`])).exitCode) {
        say('The NAS already has the executables: its own plan follows.');
        const code = await ssh.stream(remoteCommand, streamOptions);
        if (code !== 0) throw new CliError(`the plan on the NAS failed (exit ${code})`, { exitCode: code as ExitCode });
      }
      return;
    }
    const upload = await uploadExecutables(ssh, join(binRoot, nas.folder), dir);
    say(upload.action === 'skipped' ? `Executables on the NAS are current (${nas.folder})` : `Uploaded the ${nas.folder} executables (${upload.bytes} bytes) to ${upload.remoteBin}`);
    // 0600 like planetarion.env: a compose file holds the database's passwords.
    await uploadFile(ssh, config.composeFile, `${dir}/docker-compose.qnap.yml`);
    say(`Uploaded ${config.composeFile} to ${dir}/docker-compose.qnap.yml`);
    if (settings) await applySettingsUpload(ssh, settings, settingsPath);
    for (const image of options.images) {
      const shipped = await shipImage(ssh, image);
      say(shipped.action === 'skipped' ? `Image ${image} is already on the NAS` : `Shipped image ${image} (${shipped.bytes} bytes)`);
    }
  }
  const json = options.remoteArgs.includes('--json');
  if (options.follow) {
    const record = await remoteRunRecord(ssh, dir, options.follow);
    return followRemoteRun(ssh, dir, record, record.logOffset, { say, json });
  }
  if (!options.detach) {
    const code = await ssh.stream(remoteCommand, streamOptions);
    if (code !== 0) throw new CliError(`the command on the NAS failed (exit ${code})`, { exitCode: (code === 2 || code === 75 ? code : 1) as ExitCode });
    return;
  }
  // Detached from this SSH session: a lost connection never stops the deployment (deploy-detach.ts).
  say(`Starting on the NAS: ${remoteCommand.join(' ')}${options.identity ? ' (the age identity on its standard input)' : ''}`);
  await runDetachedOnNas(ssh, dir, remoteCommand.slice(4), { say, json, stdin: options.identity });
}
