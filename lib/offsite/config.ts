// What the off-site settings mean: the bucket and prefix, how to reach the server, and where the
// credentials come from (the environment or an AWS-style credentials file, never argv or a log).
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CliError, UsageError } from '../errors.ts';
import type { Settings } from '../settings.ts';

export interface OffsiteConfig {
  /** `s3://bucket/prefix` as configured, for messages. */
  url: string;
  bucket: string;
  /** '' or `some/prefix/`: every key is this plus a backup's (or sidecar's) file name. */
  prefix: string;
  endpoint: string | undefined;
  region: string;
  pathStyle: boolean;
  keep: number;
  timeoutMs: number;
  credentialsFile: string | undefined;
}

/** The off-site configuration, or undefined when PLANETARION_OFFSITE is not set. */
export function offsiteConfig(settings: Settings): OffsiteConfig | undefined {
  if (!settings.offsite) return undefined;
  const [, bucket = '', prefix = ''] = /^s3:\/\/([^/]+)\/?(.*)$/.exec(settings.offsite) ?? [];
  return {
    url: settings.offsite,
    bucket,
    prefix: prefix ? `${prefix}/` : '',
    endpoint: settings.s3Endpoint,
    region: settings.s3Region ?? 'us-east-1',
    pathStyle: settings.s3PathStyle ? settings.s3PathStyle === 'on' : settings.s3Endpoint !== undefined,
    keep: settings.offsiteKeep ?? settings.keep,
    timeoutMs: settings.s3Timeout * 1000,
    credentialsFile: settings.s3CredentialsFile,
  };
}

/** Where a server is: the endpoint's origin, or AWS's regional one. Never holds a secret. */
export function serverName(config: OffsiteConfig): string {
  return config.endpoint ? new URL(config.endpoint).origin : `AWS S3 (${config.region})`;
}

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** Where they were found, for messages: never the values. */
  source: string;
}

/** The `[profile]` section of an AWS credentials file, as key -> value. */
export function parseCredentialsFile(text: string, profile: string): Map<string, string> | undefined {
  let current: string | undefined;
  let found: Map<string, string> | undefined;
  for (const line of text.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';')) continue;
    const section = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(trimmed);
    if (section) {
      current = section[1];
      if (current === profile) found ??= new Map();
      continue;
    }
    const pair = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(trimmed);
    if (pair && current === profile) found!.set(pair[1]!.toLowerCase(), pair[2]!.trim());
  }
  return found;
}

const missingAdvice =
  'Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or write them to a credentials file (mode 0600: [default] aws_access_key_id = ..., aws_secret_access_key = ...) and point AWS_SHARED_CREDENTIALS_FILE (or planetarion.env) at it. Never put them on the command line or in the cron line.';

/** The credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else the credentials file; a CliError names what is missing. */
export function resolveCredentials(config: OffsiteConfig, env: NodeJS.ProcessEnv = process.env): Credentials {
  if (env.AWS_ACCESS_KEY_ID || env.AWS_SECRET_ACCESS_KEY) {
    if (!env.AWS_ACCESS_KEY_ID || !env.AWS_SECRET_ACCESS_KEY) {
      throw new UsageError(`only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set`, missingAdvice);
    }
    return {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      sessionToken: env.AWS_SESSION_TOKEN || undefined,
      source: 'the environment',
    };
  }
  const file = config.credentialsFile ?? join(homedir(), '.aws', 'credentials');
  const profile = env.AWS_PROFILE || 'default';
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'does not exist'
        : `cannot be read (${(error as NodeJS.ErrnoException).code})`;
    throw new UsageError(
      `no S3 credentials for ${config.url}: AWS_ACCESS_KEY_ID is not set and the credentials file ${file} ${reason}`,
      missingAdvice,
    );
  }
  const section = parseCredentialsFile(text, profile);
  const accessKeyId = section?.get('aws_access_key_id');
  const secretAccessKey = section?.get('aws_secret_access_key');
  if (!accessKeyId || !secretAccessKey) {
    throw new UsageError(
      `the credentials file ${file} has no aws_access_key_id and aws_secret_access_key in profile [${profile}]`,
      missingAdvice,
    );
  }
  return {
    accessKeyId,
    secretAccessKey,
    sessionToken: section?.get('aws_session_token'),
    source: `${file} [${profile}]`,
  };
}

/** A warning when a credentials file can be read by other users (it holds a secret). */
export function credentialsFileWarning(credentials: Credentials): string | undefined {
  const file = credentials.source.replace(/ \[[^\]]*\]$/, '');
  if (credentials.source === 'the environment') return undefined;
  try {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077)
      return `the credentials file ${file} is readable by others (mode ${mode.toString(8)}): chmod 600 ${file}`;
  } catch {
    // read a moment ago; a race is not worth a message
  }
  return undefined;
}

/** A CliError for a failure of the off-site copy that says the local backup is not affected. */
export function offsiteError(message: string, advice?: string): CliError {
  return new CliError(message, { advice });
}

/** What setup-backup-cron warns about off-site: an unencrypted copy, and keys cron cannot (and must not) get from the command line. */
export function offsiteCronWarnings(settings: Settings, env: NodeJS.ProcessEnv): string[] {
  if (!settings.offsite) return [];
  const warnings: string[] = [];
  if (!settings.ageRecipients)
    warnings.push(
      `off-site copies to ${settings.offsite} will not be encrypted: the storage provider can read them (set PLANETARION_AGE_RECIPIENTS)`,
    );
  if (env.AWS_ACCESS_KEY_ID && !settings.s3CredentialsFile) {
    warnings.push(
      'AWS_ACCESS_KEY_ID is set in this shell but cron will not see it (keys never go into the cron line): put the keys in a credentials file (mode 0600) and AWS_SHARED_CREDENTIALS_FILE=<that file> in planetarion.env',
    );
  }
  return warnings;
}
