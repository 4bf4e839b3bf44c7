// deploy-to-qnap from a workstation: check the NAS over SSH, bring the matching executables,
// the compose file, the settings file and images there, then run the A-B flow on the NAS with
// the uploaded executable, its output streamed back.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { readComposeFile } from '../host/compose.ts';
import { buildAndShip, buildOnNas, serviceImagesArg, tagBuilds, type ImageOutcome } from './images.ts';
import { syncSources } from './sync.ts';
import { relativeBinds } from '../deploy/relative-binds.ts';
import { locateDocker } from '../host/docker-binary.ts';
import type { DeployConfig } from './config.ts';
import { sshTargetOf } from './config.ts';
import { CliError, UsageError, exitCodeOf } from '../errors.ts';
import {
  availableBuilds,
  localBinRoot,
  probeNas,
  shipImage,
  uploadExecutables,
  uploadFile,
  type NasInfo,
} from './upload.ts';
import { applySettingsUpload, describeSettingsPlan, planSettingsUpload, settingsRefusal } from './settings-merge.ts';
import { Ssh } from './ssh.ts';
import { followRemoteRun, remoteRunRecord, runDetachedOnNas } from './follow.ts';
import { configFileName, nasComposeFileName } from '../paths.ts';

export interface RemoteDeployOptions {
  config: DeployConfig;
  /** Flags for the NAS-side run (`--local` and `--dir` are added here). */
  remoteArgs: string[];
  /** The database service of the compose file (its bind mounts are storage, not sources). */
  dbService: string;
  /** Images to ship with `docker save | ssh docker load`. */
  images: string[];
  /** Build the services with `build:` on the NAS from their synced context (default: here, for the NAS's architecture). */
  buildOnNas?: boolean;
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
  say(
    `NAS: ${nas.machine}, kernel ${nas.kernel} -> ${nas.folder}; ${dir} ${nas.projectDirExists ? 'exists' : 'will be created'}`,
  );
  const remoteCommand = [
    `${dir}/deploy-to-qnap`,
    '--local',
    '--dir',
    dir,
    ...options.remoteArgs,
    ...(options.identity ? ['--identity-stdin'] : []),
  ];
  // A string is replayable, so the stream keeps its connection retries.
  const streamOptions = options.identity ? { stdin: options.identity } : {};

  if (options.upload) {
    if (!existsSync(config.composeFile)) {
      throw new UsageError(
        `the compose file ${config.composeFile} does not exist`,
        'Set DOCKER_COMPOSE_FILE in .qnap-deploy.env or pass --compose-file.',
      );
    }
    // Merged into the NAS's file, never overwriting it: a change needs --replace-settings (lib/remote/settings-merge.ts).
    // Decided before anything is synced, built or uploaded.
    const settingsPath = `${dir}/${configFileName}`;
    const settings = options.settingsFile
      ? await planSettingsUpload(
          ssh,
          readFileSync(options.settingsFile, 'utf8'),
          settingsPath,
          options.replaceSettings === true,
        )
      : undefined;
    for (const line of settings ? describeSettingsPlan(settings, settingsPath) : []) say(line);
    if (settings?.action === 'refuse' && !options.dryRun) throw settingsRefusal(settings, settingsPath);
    const images = await prepareSources(ssh, nas, options);
    if (images.length) remoteCommand.push('--service-images', serviceImagesArg(images));
    if (options.dryRun) {
      say(
        `Plan: upload ${join(binRoot, nas.folder)} to ${dir}/bin (skipped if SHA256SUMS matches), ${config.composeFile} to ${dir}/${nasComposeFileName}${options.settingsFile ? `, ${options.settingsFile} to ${dir}/planetarion.env` : ''}${options.images.length ? `, images ${options.images.join(', ')}` : ''}; then run on the NAS: ${ssh.describe(remoteCommand)}`,
      );
      if (!(await ssh.run(['test', '-x', `${dir}/deploy-to-qnap`])).exitCode) {
        say('The NAS already has the executables: its own plan follows.');
        const code = await ssh.stream(remoteCommand, streamOptions);
        if (code !== 0) throw new CliError(`the plan on the NAS failed (exit ${code})`, { exitCode: exitCodeOf(code) });
      }
      return;
    }
    const upload = await uploadExecutables(ssh, join(binRoot, nas.folder), dir);
    say(
      upload.action === 'skipped'
        ? `Executables on the NAS are current (${nas.folder})`
        : `Uploaded the ${nas.folder} executables (${upload.bytes} bytes) to ${upload.remoteBin}`,
    );
    // 0600 like planetarion.env: a compose file holds the database's passwords.
    await uploadFile(ssh, config.composeFile, `${dir}/${nasComposeFileName}`);
    say(`Uploaded ${config.composeFile} to ${dir}/${nasComposeFileName}`);
    if (settings) await applySettingsUpload(ssh, settings, settingsPath);
    for (const image of options.images) {
      const shipped = await shipImage(ssh, image);
      say(
        shipped.action === 'skipped'
          ? `Image ${image} is already on the NAS`
          : `Shipped image ${image} (${shipped.bytes} bytes)`,
      );
    }
  }
  const json = options.remoteArgs.includes('--json');
  if (options.follow) {
    const record = await remoteRunRecord(ssh, dir, options.follow);
    return followRemoteRun(ssh, dir, record, record.logOffset, { say, json });
  }
  if (!options.detach) {
    const code = await ssh.stream(remoteCommand, streamOptions);
    if (code !== 0)
      throw new CliError(`the command on the NAS failed (exit ${code})`, {
        exitCode: exitCodeOf(code),
      });
    return;
  }
  // Detached from this SSH session: a lost connection never stops the deployment (deploy/detach.ts).
  say(
    `Starting on the NAS: ${remoteCommand.join(' ')}${options.identity ? ' (the age identity on its standard input)' : ''}`,
  );
  await runDetachedOnNas(ssh, dir, remoteCommand.slice(4), { say, json, stdin: options.identity });
}

/**
 * Before the NAS-side run: the relative bind mounts (and, with --build-on-nas, the build contexts)
 * synced to the NAS, and the images of the services that build made and put there. With dryRun,
 * says what would be built, shipped and synced, and returns the tags the slot would run.
 */
async function prepareSources(ssh: Ssh, nas: NasInfo, options: RemoteDeployOptions): Promise<ImageOutcome[]> {
  const { config, say, dryRun } = options;
  const doc = readComposeFile(config.composeFile);
  const root = dirname(config.composeFile);
  const builds = tagBuilds(doc, root, config.projectDir, nas.machine);
  const paths = [
    ...new Set([
      ...relativeBinds(doc, options.dbService).map((b) => b.path),
      ...(options.buildOnNas ? builds.map((b) => b.context) : []),
    ]),
  ];
  if (paths.length) {
    const sync = await syncSources(ssh, root, paths, config.projectDir, { dryRun });
    say(
      `${dryRun ? 'Plan: sync' : 'Synced'} ${paths.map((p) => `./${p}`).join(', ')} to ${sync.root}: ${sync.changed.length} changed, ${sync.removed.length} removed of ${sync.total} files (not .git, node_modules, __pycache__); each new slot mounts its own copy`,
    );
  }
  const outcomes: ImageOutcome[] = [];
  for (const build of builds) {
    const what = `'${build.service}' (${build.context}/${build.dockerfile.replace(/^\.\//, '')}${build.target ? `, target ${build.target}` : ''}${Object.keys(build.args).length ? `, args ${Object.keys(build.args).join(' ')}` : ''})`;
    if (dryRun) {
      say(
        `Plan: build ${what} ${options.buildOnNas ? 'on the NAS' : `here for ${build.platform}`} as ${build.tag}${options.buildOnNas ? '' : ', ship it with docker save | ssh docker load'} (skipped when the NAS has that tag)`,
      );
      outcomes.push({ service: build.service, tag: build.tag, built: 'already', shipment: undefined });
      continue;
    }
    const outcome = options.buildOnNas
      ? await buildOnNas(ssh, build, config.projectDir)
      : await buildAndShip(ssh, build, root, locateDocker());
    const built =
      outcome.built === 'already'
        ? options.buildOnNas
          ? 'already on the NAS'
          : 'already built here'
        : `built ${outcome.built}`;
    const shipped = outcome.shipment
      ? outcome.shipment.action === 'skipped'
        ? `; image ${build.tag} is already on the NAS`
        : `; shipped image ${build.tag} (${outcome.shipment.bytes} bytes)`
      : '';
    say(`Image of ${what}: ${build.tag} ${built}${shipped}`);
    outcomes.push(outcome);
  }
  return outcomes;
}
