// Every setting of every command, in one table: its environment name, its flag, its default
// and what values it allows. Precedence: flag > environment > <dir>/planetarion.env > default.
import { dirname, isAbsolute, join, normalize, resolve } from 'node:path';
import { parseRecipientList } from './age.ts';
import { UsageError } from './errors.ts';
import { scheduleProblem } from './schedule.ts';
import { configFileName } from './paths.ts';
import { type LayerValue, type Layers, pickLayer, readEnvFile, type SettingSource } from './layered.ts';

export interface Settings {
  dir: string;
  backupDir: string;
  logDir: string;
  container: string;
  dbUser: string;
  dbName: string;
  keep: number;
  schedule: string;
  /** When cron runs the weekly restore drill. */
  drillSchedule: string;
  /** Explicit docker binary; undefined means discover it (lib/host/docker-binary.ts). */
  docker: string | undefined;
  /** plain SQL (`.sql[.gz]`, see compress) or pg_dump's custom format (`.dump`). */
  format: 'plain' | 'custom';
  /** gzip (compressed inside the container, `.sql.gz`) or none (the old scripts' plain `.sql`). */
  compress: 'gzip' | 'none';
  /** Whether backups take the fingerprint (`off` skips it; the manifest says so). */
  fingerprint: 'on' | 'off';
  /** Tables the fingerprint leaves out, e.g. `public.sessions,audit_*`. */
  fingerprintExclude: string;
  /** healthchecks.io-style URL: GET `<url>/start` as a run starts, `<url>` on success, `<url>/fail` on failure. */
  pingUrl: string | undefined;
  /** age public keys (or an absolute path to a file of them): when set, backups are encrypted. */
  ageRecipients: string | undefined;
  /** Path of the age identity (secret key) file a restore of an encrypted backup needs. */
  ageIdentity: string | undefined;
  /** `s3://bucket/prefix`: where verified backups are also copied; undefined: no off-site copy. */
  offsite: string | undefined;
  /** S3 endpoint URL of a provider other than AWS (MinIO, B2, Wasabi, R2, QuObjects); undefined: AWS. */
  s3Endpoint: string | undefined;
  /** The bucket's region; undefined: us-east-1 (what most S3-compatible servers accept). */
  s3Region: string | undefined;
  /** Path-style URLs (endpoint/bucket/key); undefined: on when an endpoint is set. */
  s3PathStyle: 'on' | 'off' | undefined;
  /** How many backups off-site rotation keeps; undefined: the local keep. */
  offsiteKeep: number | undefined;
  /** Seconds an S3 request may go without progress before it is retried. */
  s3Timeout: number;
  /** A credentials file (AWS ini format) used when AWS_ACCESS_KEY_ID is not set. */
  s3CredentialsFile: string | undefined;
  /** Seconds an online deployment's replication may make no progress before the deployment is aborted. */
  replicationStall: number;
}
export type SettingKey = keyof Settings;

export interface SettingSpec<K extends SettingKey = SettingKey> {
  key: K;
  env: string;
  flag: string;
  valueName: string;
  description: string;
  /** The default, possibly derived from the base dir; undefined means "none". */
  defaultValue(dir: string): string | undefined;
  /** Turns the raw text into the value, or throws a message that says what is allowed. */
  parse(raw: string): Settings[K];
}

export const defaultDir = '/share/CACHEDEV1_DATA/planetarion';

const dockerName = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const pgName = /^[A-Za-z_][A-Za-z0-9_$-]{0,62}$/;

function absoluteDir(raw: string): string {
  if (!isAbsolute(raw)) throw new Error('an absolute path is required (it starts with /)');
  return normalize(raw).replace(/(.)\/$/, '$1');
}

function pattern(re: RegExp, allowed: string) {
  return (raw: string): string => {
    if (!re.test(raw)) throw new Error(allowed);
    return raw;
  };
}

function parseSchedule(raw: string): string {
  const problem = scheduleProblem(raw);
  if (problem) throw new Error(problem);
  return raw.trim().split(/\s+/).join(' ');
}

function wholeNumber(min: number, max: number) {
  return (raw: string): number => {
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max)
      throw new Error(`a whole number from ${min} to ${max}`);
    return Number(raw);
  };
}

function httpUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error('an http:// or https:// URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('an http:// or https:// URL');
  return raw.replace(/\/+$/, '');
}

/** `s3://bucket[/prefix]`: a bucket name as S3 allows it, a prefix without empty segments. */
function parseOffsiteUrl(raw: string): string {
  const match = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(raw.trim());
  const prefix = match?.[2]?.replace(/\/+$/, '') ?? '';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what the check refuses
  if (!match || (prefix !== '' && prefix.split('/').includes('')) || /[\\\x00-\x1f]/.test(prefix)) {
    throw new Error(
      's3://BUCKET or s3://BUCKET/PREFIX (a bucket name: lower-case letters, digits, . -; a prefix without empty parts)',
    );
  }
  return prefix ? `s3://${match[1]}/${prefix}` : `s3://${match[1]}`;
}

function define<K extends SettingKey>(spec: SettingSpec<K>): SettingSpec<K> {
  return spec;
}

/** The settings table. Its order is the order of the help text. */
export const settingSpecs = [
  define({
    key: 'dir',
    env: 'PLANETARION_DIR',
    flag: 'dir',
    valueName: 'DIR',
    description: 'base directory on the NAS (holds planetarion.env, the lock and status.json)',
    defaultValue: () => defaultDir,
    parse: absoluteDir,
  }),
  define({
    key: 'backupDir',
    env: 'PLANETARION_BACKUP_DIR',
    flag: 'backup-dir',
    valueName: 'DIR',
    description: 'where backups are written',
    defaultValue: (dir) => join(dir, 'backups'),
    parse: absoluteDir,
  }),
  define({
    key: 'logDir',
    env: 'PLANETARION_LOG_DIR',
    flag: 'log-dir',
    valueName: 'DIR',
    description: 'where backup.log and diagnostics go',
    defaultValue: (dir) => join(dir, 'logs'),
    parse: absoluteDir,
  }),
  define({
    key: 'container',
    env: 'PLANETARION_DB_CONTAINER',
    flag: 'container',
    valueName: 'NAME',
    description: 'the database container',
    defaultValue: () => 'planetarion-db',
    parse: pattern(dockerName, 'a Docker container name: letters, digits, _ . - (starting with a letter or digit)'),
  }),
  define({
    key: 'dbUser',
    env: 'PLANETARION_DB_USER',
    flag: 'db-user',
    valueName: 'USER',
    description: 'the PostgreSQL user',
    defaultValue: () => 'planetarion_user',
    parse: pattern(pgName, 'a PostgreSQL role name: letters, digits, _ $ - (up to 63, not starting with a digit)'),
  }),
  define({
    key: 'dbName',
    env: 'PLANETARION_DB_NAME',
    flag: 'db-name',
    valueName: 'NAME',
    description: 'the PostgreSQL database',
    defaultValue: () => 'planetarion',
    parse: pattern(pgName, 'a PostgreSQL database name: letters, digits, _ $ - (up to 63, not starting with a digit)'),
  }),
  define({
    key: 'keep',
    env: 'PLANETARION_KEEP',
    flag: 'keep',
    valueName: 'N',
    description: 'how many backups rotation keeps',
    defaultValue: () => '3',
    parse(raw) {
      if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 1000) throw new Error('a whole number from 1 to 1000');
      return Number(raw);
    },
  }),
  define({
    key: 'schedule',
    env: 'PLANETARION_SCHEDULE',
    flag: 'schedule',
    valueName: 'CRON',
    description: 'when cron runs the backup (5 cron fields)',
    defaultValue: () => '0 2,10,18 * * *',
    parse: parseSchedule,
  }),
  define({
    key: 'drillSchedule',
    env: 'PLANETARION_DRILL_SCHEDULE',
    flag: 'drill-schedule',
    valueName: 'CRON',
    description: 'when cron runs the restore drill (restore-database --test latest)',
    defaultValue: () => '0 4 * * 0',
    parse: parseSchedule,
  }),
  define({
    key: 'docker',
    env: 'DOCKER',
    flag: 'docker',
    valueName: 'PATH',
    description: "the docker binary (default: found on PATH, else Container Station's)",
    defaultValue: () => undefined,
    parse(raw) {
      if (!isAbsolute(raw)) throw new Error('an absolute path to the docker binary');
      return raw;
    },
  }),
  define({
    key: 'format',
    env: 'PLANETARION_FORMAT',
    flag: 'format',
    valueName: 'plain|custom',
    description: "plain SQL (.sql.gz / .sql) or pg_dump's custom format (.dump, restored with pg_restore)",
    defaultValue: () => 'plain',
    parse(raw) {
      if (raw !== 'plain' && raw !== 'custom') throw new Error("'plain' or 'custom'");
      return raw;
    },
  }),
  define({
    key: 'compress',
    env: 'PLANETARION_COMPRESS',
    flag: 'compress',
    valueName: 'gzip|none',
    description: 'gzip inside the container (.sql.gz) or none (plain .sql)',
    defaultValue: () => 'gzip',
    parse(raw) {
      if (raw !== 'gzip' && raw !== 'none') throw new Error("'gzip' or 'none'");
      return raw;
    },
  }),
  define({
    key: 'fingerprint',
    env: 'PLANETARION_FINGERPRINT',
    flag: 'fingerprint',
    valueName: 'on|off',
    description: 'take the game-state fingerprint in the dump snapshot',
    defaultValue: () => 'on',
    parse(raw) {
      if (raw !== 'on' && raw !== 'off') throw new Error("'on' or 'off'");
      return raw;
    },
  }),
  define({
    key: 'fingerprintExclude',
    env: 'PLANETARION_FINGERPRINT_EXCLUDE',
    flag: 'fingerprint-exclude',
    valueName: 'LIST',
    description: 'tables the fingerprint leaves out (schema.table or table, * wildcard, comma-separated)',
    defaultValue: () => '',
    parse(raw) {
      if (!/^[^'"\n]*$/.test(raw)) throw new Error('comma-separated table patterns without quotes or newlines');
      return raw;
    },
  }),
  define({
    key: 'pingUrl',
    env: 'PLANETARION_PING_URL',
    flag: 'ping-url',
    valueName: 'URL',
    description:
      'monitoring URL: GET <url>/start as a run starts, <url> on success, <url>/fail on failure (a failed ping never fails the backup)',
    defaultValue: () => undefined,
    parse: httpUrl,
  }),
  define({
    key: 'ageRecipients',
    env: 'PLANETARION_AGE_RECIPIENTS',
    flag: 'age-recipients',
    valueName: 'KEYS|FILE',
    description: 'encrypt new backups (.age) to these age public keys (age1..., comma separated) or the keys in FILE',
    defaultValue: () => undefined,
    parse(raw) {
      // A file is read when the backup starts (lib/age.ts resolveRecipients); keys are checked now.
      if (isAbsolute(raw.trim())) return normalize(raw.trim());
      parseRecipientList(raw);
      return raw.trim();
    },
  }),
  define({
    key: 'ageIdentity',
    env: 'PLANETARION_AGE_IDENTITY',
    flag: 'identity',
    valueName: 'FILE',
    description: 'the age identity (secret key) file that decrypts .age backups; keep it off the NAS',
    defaultValue: () => undefined,
    // A relative path is taken from where the command runs (it is usually given as a flag).
    parse: (raw) => resolve(raw),
  }),
  define({
    key: 'offsite',
    env: 'PLANETARION_OFFSITE',
    flag: 'offsite-url',
    valueName: 's3://BUCKET/PREFIX',
    description:
      'also copy every verified backup to this S3 bucket and prefix (credentials: AWS_ACCESS_KEY_ID and\nAWS_SECRET_ACCESS_KEY in the environment, or the credentials file below; never on the command line)',
    defaultValue: () => undefined,
    parse: parseOffsiteUrl,
  }),
  define({
    key: 's3Endpoint',
    env: 'PLANETARION_S3_ENDPOINT',
    flag: 's3-endpoint',
    valueName: 'URL',
    description: 'S3 endpoint of a provider other than AWS (MinIO, Backblaze B2, Wasabi, R2, QuObjects)',
    defaultValue: () => undefined,
    parse: httpUrl,
  }),
  define({
    key: 's3Region',
    env: 'PLANETARION_S3_REGION',
    flag: 's3-region',
    valueName: 'REGION',
    description: "the bucket's region (default us-east-1)",
    defaultValue: () => undefined,
    parse: pattern(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a region name such as eu-central-1 (lower-case letters, digits, -)'),
  }),
  define({
    key: 's3PathStyle',
    env: 'PLANETARION_S3_PATH_STYLE',
    flag: 's3-path-style',
    valueName: 'on|off',
    description:
      'path-style URLs (endpoint/bucket/key) instead of bucket.endpoint (default: on when an endpoint is set)',
    defaultValue: () => undefined,
    parse(raw) {
      if (raw !== 'on' && raw !== 'off') throw new Error("'on' or 'off'");
      return raw;
    },
  }),
  define({
    key: 'offsiteKeep',
    env: 'PLANETARION_OFFSITE_KEEP',
    flag: 'offsite-keep',
    valueName: 'N',
    description: 'how many backups off-site rotation keeps (default: PLANETARION_KEEP)',
    defaultValue: () => undefined,
    parse: wholeNumber(1, 10000),
  }),
  define({
    key: 's3Timeout',
    env: 'PLANETARION_S3_TIMEOUT',
    flag: 's3-timeout',
    valueName: 'SECONDS',
    description: 'how long an S3 request may stall before it is retried (3 attempts each)',
    defaultValue: () => '60',
    parse: wholeNumber(1, 3600),
  }),
  define({
    key: 'replicationStall',
    env: 'PLANETARION_REPLICATION_STALL',
    flag: 'replication-stall',
    valueName: 'SECONDS',
    description:
      "how long an online deployment's copy or catch-up may make no progress before it is aborted (the live slot serving on)",
    defaultValue: () => '300',
    parse: wholeNumber(1, 86400),
  }),
  define({
    key: 's3CredentialsFile',
    env: 'AWS_SHARED_CREDENTIALS_FILE',
    flag: 's3-credentials-file',
    valueName: 'FILE',
    description:
      'AWS-style credentials file (mode 0600; profile AWS_PROFILE or default), read when AWS_ACCESS_KEY_ID is not set',
    defaultValue: () => undefined,
    parse: (raw) => resolve(raw),
  }),
] as const satisfies readonly SettingSpec[];

/** The spec of one setting. */
export function settingSpec(key: SettingKey): SettingSpec {
  return settingSpecs.find((s) => s.key === key)! as SettingSpec;
}

export interface SettingsInput {
  /** Flag values by flag name (without --); undefined when not given. */
  flags?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** Reads a file or returns undefined when it does not exist; injectable for tests. */
  readFile?: (path: string) => string | undefined;
}

export interface ResolvedSettings extends Settings {
  /** Where each value came from, for --help and diagnostics. */
  sources: Record<SettingKey, SettingSource>;
  /** The config file that was read, if any. */
  configFile: string | undefined;
}

/**
 * Resolves every setting: flag > environment > `<dir>/planetarion.env` > default. A bad value
 * throws a UsageError (exit 2) naming the setting, the value and what is allowed; nothing is touched.
 */
export function resolveSettings(input: SettingsInput = {}): ResolvedSettings {
  const flags = input.flags ?? {};
  const env = input.env ?? process.env;
  const readFile = input.readFile;
  const out: Record<string, unknown> = {};
  const sources = {} as Record<SettingKey, SettingSource>;

  const take = (spec: SettingSpec, found: LayerValue) => {
    try {
      out[spec.key] = spec.parse(found.raw);
    } catch (error) {
      throw new UsageError(
        `invalid ${found.origin} '${found.raw}': ${(error as Error).message}`,
        `Fix ${found.origin} (setting ${spec.env}, flag --${spec.flag}) and run again.`,
      );
    }
    sources[spec.key] = found.source;
  };

  const layers: Layers = { flags, env, file: new Map() };
  let configFile: string | undefined;
  for (const spec of settingSpecs as readonly SettingSpec[]) {
    const found = pickLayer(layers, spec.flag, spec.env);
    if (found) take(spec, found);
    else {
      const fallback = spec.defaultValue(out.dir as string);
      out[spec.key] = fallback === undefined ? undefined : spec.parse(fallback);
      sources[spec.key] = 'default';
    }
    // The base dir decides where the config file is, so it is read right after the dir is known.
    if (spec.key === 'dir') {
      const path = join(out.dir as string, configFileName);
      const file = readEnvFile(path, {
        readFile,
        names: { unreadable: `the config file ${path}`, invalid: `config file ${path}` },
        unreadable: `Make it a file readable by the user that runs the command (e.g. chmod 600 ${path} as its owner), or remove it.`,
        malformed: 'Write one KEY=VALUE per line.',
        special: (code) =>
          code === 'ENOTDIR'
            ? new UsageError(
                `PLANETARION_DIR '${dirname(path)}' is not a directory`,
                'Set PLANETARION_DIR (or --dir) to the project folder on the NAS.',
              )
            : undefined,
      });
      Object.assign(layers, { file: file.values, filePath: path });
      configFile = file.exists ? path : undefined;
    }
  }
  return { ...(out as unknown as Settings), sources, configFile };
}
