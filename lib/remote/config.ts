// The workstation side's configuration for deploy-to-qnap: `.qnap-deploy.env` in the current
// folder (the keys of the shell script it replaces), then the environment, then flags.
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, normalize, resolve } from 'node:path';
import type { FlagSpec } from '../cli/command.ts';
import { UsageError } from '../errors.ts';
import { defaultDir } from '../settings.ts';
import { type Layers, pickLayer, readEnvFile, type SettingSource } from '../layered.ts';
import type { SshTarget } from './ssh.ts';
import { deployConfigFileName, nasComposeFileName } from '../paths.ts';

/** The file read from the current folder. */

export interface DeployConfig {
  /** QNAP_IP: the NAS's address (a host name or IP). */
  host: string;
  /** QNAP_USER: the SSH user on the NAS. */
  user: string;
  /** QNAP_PROJECT_DIR: absolute directory on the NAS (the base dir of every command there). */
  projectDir: string;
  /** DOCKER_COMPOSE_FILE: the local compose file, resolved against the current folder. */
  composeFile: string;
  /** QNAP_SSH_KEY: the private key file (absolute), or undefined for ssh's defaults. */
  sshKey: string | undefined;
  /** QNAP_SSH_PORT. */
  sshPort: number;
  /** QNAP_SSH_KNOWN_HOSTS: a known_hosts file (absolute) used with StrictHostKeyChecking=accept-new. */
  knownHosts: string | undefined;
  /** QNAP_SSH_TIMEOUT: seconds for ssh's connect timeout. */
  sshTimeoutSec: number;
  /** The .qnap-deploy.env that was read, if any. */
  configFile: string | undefined;
  /** Where each value came from. */
  sources: Record<DeployConfigKey, SettingSource>;
}

export type DeployConfigKey =
  | 'host'
  | 'user'
  | 'projectDir'
  | 'composeFile'
  | 'sshKey'
  | 'sshPort'
  | 'knownHosts'
  | 'sshTimeoutSec';

interface ParseContext {
  cwd: string;
  home: string;
  isFile: (path: string) => boolean;
  dirExists: (path: string) => boolean;
}

interface DeploySettingSpec {
  key: DeployConfigKey;
  env: string;
  flag: string;
  valueName: string;
  description: string;
  /** The default text; undefined means none. */
  defaultValue: string | undefined;
  /** Turns raw text into the value or throws a message saying what is allowed. */
  parse(raw: string, ctx: ParseContext): string | number;
}

// Characters that mean nothing to a shell (quotePosix leaves them bare) and nothing to scp's
// legacy protocol, which hands the remote path to the NAS's shell unquoted.
const safePathChars = /^[\w@%+=:,./-]+$/;

/** `~/x` -> $HOME/x; relative -> against the current folder. */
function localPath(raw: string, ctx: ParseContext): string {
  const expanded = raw === '~' ? ctx.home : raw.startsWith('~/') ? join(ctx.home, raw.slice(2)) : raw;
  return resolve(ctx.cwd, expanded);
}

function wholeNumber(min: number, max: number) {
  return (raw: string): number => {
    if (!/^\d+$/.test(raw.trim()) || Number(raw) < min || Number(raw) > max)
      throw new Error(`a whole number from ${min} to ${max}`);
    return Number(raw);
  };
}

/** The settings table; its order is the order of the flags in the help. */
const deploySettingSpecs: readonly DeploySettingSpec[] = [
  {
    key: 'host',
    env: 'QNAP_IP',
    flag: 'host',
    valueName: 'HOST',
    description: "the NAS's address (host name or IP)",
    defaultValue: undefined,
    parse(raw) {
      // Never starts with '-' (it would be read as an ssh option); no spaces or shell characters.
      if (!/^[A-Za-z0-9[][A-Za-z0-9._:%[\]-]*$/.test(raw))
        throw new Error('a host name or IP address: letters, digits, . - : (no spaces or shell characters)');
      return raw.replace(/^\[(.*)\]$/, '$1');
    },
  },
  {
    key: 'user',
    env: 'QNAP_USER',
    flag: 'user',
    valueName: 'USER',
    description: 'the SSH user on the NAS',
    defaultValue: undefined,
    parse(raw) {
      if (!/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(raw))
        throw new Error('a user name: letters, digits, _ . - (not starting with - or .)');
      return raw;
    },
  },
  {
    key: 'projectDir',
    env: 'QNAP_PROJECT_DIR',
    flag: 'project-dir',
    valueName: 'DIR',
    description: 'the directory on the NAS that holds the executables, compose file, backups and logs',
    defaultValue: defaultDir,
    parse(raw) {
      if (!raw.startsWith('/')) throw new Error('an absolute path on the NAS (it starts with /)');
      const dir = normalize(raw).replace(/\/+$/, '');
      if (dir === '') throw new Error('a directory below / (the executables go to <dir>/bin)');
      if (!safePathChars.test(dir)) throw new Error('a path of letters, digits and _ . - / @ % + = : , only');
      return dir;
    },
  },
  {
    key: 'composeFile',
    env: 'DOCKER_COMPOSE_FILE',
    flag: 'compose-file',
    valueName: 'FILE',
    description: 'the local compose file to deploy (relative to the current folder)',
    defaultValue: nasComposeFileName,
    parse: (raw, ctx) => localPath(raw, ctx),
  },
  {
    key: 'sshKey',
    env: 'QNAP_SSH_KEY',
    flag: 'ssh-key',
    valueName: 'FILE',
    description: "the SSH private key (default: ssh's own keys and agent)",
    defaultValue: undefined,
    parse(raw, ctx) {
      const path = localPath(raw, ctx);
      if (!ctx.isFile(path)) throw new Error(`an existing private key file (${path} does not exist)`);
      return path;
    },
  },
  {
    key: 'sshPort',
    env: 'QNAP_SSH_PORT',
    flag: 'ssh-port',
    valueName: 'PORT',
    description: "the NAS's SSH port",
    defaultValue: '22',
    parse: wholeNumber(1, 65535),
  },
  {
    key: 'knownHosts',
    env: 'QNAP_SSH_KNOWN_HOSTS',
    flag: 'known-hosts',
    valueName: 'FILE',
    description: "a known_hosts file for the NAS's host key (a new host is added to it; a changed key is refused)",
    defaultValue: undefined,
    parse(raw, ctx) {
      const path = localPath(raw, ctx);
      if (!ctx.dirExists(dirname(path)))
        throw new Error(`a file in an existing folder (${dirname(path)} does not exist)`);
      return path;
    },
  },
  {
    key: 'sshTimeoutSec',
    env: 'QNAP_SSH_TIMEOUT',
    flag: 'ssh-timeout',
    valueName: 'SECONDS',
    description: 'seconds to wait for the NAS to answer a connection (each of 3 attempts)',
    defaultValue: '10',
    parse: wholeNumber(1, 600),
  },
];

/** The flags of the deploy settings, for the command spec (each also settable in the environment and the file). */
export const deployConfigFlags: FlagSpec[] = deploySettingSpecs.map((s) => ({
  name: s.flag,
  type: 'string',
  valueName: s.valueName,
  description: `${s.description} [env ${s.env}]`,
  ...(s.defaultValue !== undefined ? { defaultText: s.defaultValue } : {}),
}));

export interface DeployConfigInput {
  /** The folder holding .qnap-deploy.env, against which local relative paths resolve. */
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Flag values by flag name (without --), as parsed; undefined when not given. */
  flags?: Record<string, unknown>;
  /** Reads a file or returns undefined when it does not exist; injectable for tests. */
  readFile?: (path: string) => string | undefined;
  /** Whether a path is an existing file; injectable for tests. */
  isFile?: (path: string) => boolean;
  /** Whether a path is an existing directory; injectable for tests. */
  dirExists?: (path: string) => boolean;
}

function isFileOnDisk(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Reads the deploy configuration: `.qnap-deploy.env` in cwd < environment < flags < defaults
 * for the rest. A missing QNAP_IP or QNAP_USER, or a bad value, throws UsageError (exit 2)
 * naming the setting, where it came from and how to set it. Touches nothing.
 */
export function loadDeployConfig(input: DeployConfigInput): DeployConfig {
  const env = input.env ?? process.env;
  const flags = input.flags ?? {};
  const ctx: ParseContext = {
    cwd: input.cwd,
    home: env.HOME || homedir(),
    isFile: input.isFile ?? isFileOnDisk,
    dirExists: input.dirExists ?? ((p) => existsSync(p) && statSync(p).isDirectory()),
  };
  const filePath = join(input.cwd, deployConfigFileName);
  const file = readEnvFile(filePath, {
    readFile: input.readFile,
    unreadable: `Make it a file this user can read (chmod 600 ${filePath}), or remove it and set the QNAP_* variables in the environment.`,
    malformed: 'Write one KEY=VALUE per line, e.g. QNAP_IP=nas.local',
  });
  const layers: Layers = { flags, env, file: file.values, filePath };

  const out: Partial<Record<DeployConfigKey, string | number | undefined>> = {};
  const sources = {} as Record<DeployConfigKey, SettingSource>;
  for (const spec of deploySettingSpecs) {
    const found = pickLayer(layers, spec.flag, spec.env);
    sources[spec.key] = found?.source ?? 'default';
    if (!found) {
      out[spec.key] = spec.defaultValue === undefined ? undefined : spec.parse(spec.defaultValue, ctx);
      continue;
    }
    try {
      out[spec.key] = spec.parse(found.raw, ctx);
    } catch (error) {
      throw new UsageError(
        `invalid ${found.origin} '${found.raw}': ${(error as Error).message}`,
        `Fix it (${spec.env} in ${deployConfigFileName} or the environment, or --${spec.flag}) and run again.`,
      );
    }
  }

  for (const spec of deploySettingSpecs.filter((s) => s.key === 'host' || s.key === 'user')) {
    if (out[spec.key] !== undefined) continue;
    const example = spec.key === 'host' ? 'nas.local' : 'admin';
    throw new UsageError(
      `${spec.env} is not set: deploy-to-qnap needs ${spec.key === 'host' ? "the NAS's address" : 'the SSH user on the NAS'}`,
      `Set ${spec.env}=${example} in ${filePath}, or in the environment, or pass --${spec.flag} ${example}.`,
    );
  }

  return {
    host: out.host as string,
    user: out.user as string,
    projectDir: out.projectDir as string,
    composeFile: out.composeFile as string,
    sshKey: out.sshKey as string | undefined,
    sshPort: out.sshPort as number,
    knownHosts: out.knownHosts as string | undefined,
    sshTimeoutSec: out.sshTimeoutSec as number,
    configFile: file.exists ? filePath : undefined,
    sources,
  };
}

/** The SSH connection settings of a deploy configuration. */
export function sshTargetOf(config: DeployConfig): SshTarget {
  return {
    host: config.host,
    user: config.user,
    port: config.sshPort,
    keyFile: config.sshKey,
    knownHosts: config.knownHosts,
    timeoutSec: config.sshTimeoutSec,
  };
}
