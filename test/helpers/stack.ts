// The deploy tests' "NAS": a temp dir holding the test stack's compose file, with a DB container
// name of its own, and a clean-up that removes every container and volume of its slots.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { distBin } from './cli.ts';
import { makeFakeQnapRoot, type FakeQnapRoot } from './fake-qnap.ts';
import { makeTempDir, removeTempDir } from './tmp.ts';
import { launcherNames } from '../../lib/paths.ts';

const fixtures = { stack: 'stack', real: 'stack-real' } as const;

export interface TestNas {
  dir: string;
  /** The configured DB container name of this NAS. */
  container: string;
  /** The compose project prefix of its slots (the dir's name). */
  project: string;
  env: Record<string, string>;
  /** Flags every deploy of this NAS gets: the fake QNAP root its cron job goes to. */
  deployArgs: string[];
  /** The NAS share the real-shaped stack's driver_opts volume binds (<dir>/share/pgdata). */
  share: string;
  /** The fake QNAP tree (crontab, recorded reload calls). */
  qnap: FakeQnapRoot;
  /** Rewrites the compose file on the NAS (e.g. to make the app unhealthy). */
  setCompose(edit: (yaml: string) => string): void;
  cleanup(): void;
}

/**
 * A fresh NAS dir with the test stack's compose file: `stack` names the DB container, `real` is
 * shaped like the game's file (no container_name, data on a driver_opts bind folder in `share`).
 */
export function makeTestNas(kind: keyof typeof fixtures = 'stack'): TestNas {
  const dir = makeTempDir('pbnas');
  const project = basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9_-]/g, '');
  const container = `${project}-db`;
  const composePath = join(dir, 'docker-compose.qnap.yml');
  const share = join(dir, 'share');
  mkdirSync(join(share, 'pgdata'), { recursive: true });
  const fixture = join(import.meta.dirname, `../fixtures/${fixtures[kind]}/docker-compose.qnap.yml`);
  writeFileSync(
    composePath,
    readFileSync(fixture, 'utf8')
      .replace('container_name: planetarion-db', `container_name: ${container}`)
      .replaceAll('__SHARE__', share),
  );
  // Like the NAS after an upload: the command names beside the project (the launchers resolve links).
  for (const name of launcherNames) symlinkSync(join(distBin, name), join(dir, name));
  writeFileSync(join(dir, 'planetarion.env'), `PLANETARION_DB_CONTAINER=${container}\n`);
  const qnap = makeFakeQnapRoot('# QNAP crontab\n0 4 * * * /sbin/hwclock -s\n');
  return {
    dir,
    container,
    project,
    env: { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: container, PATH: `${qnap.bin}:${process.env.PATH}` },
    deployArgs: ['--root', qnap.root],
    share,
    qnap,
    setCompose(edit) {
      writeFileSync(composePath, edit(readFileSync(composePath, 'utf8')));
    },
    cleanup() {
      const sh = (script: string) => execFileSync('sh', ['-c', script, 'sh', project], { stdio: 'ignore' });
      sh(
        `docker ps -a --format '{{.Names}} {{.Label "com.docker.compose.project"}}' | awk -v p="$1" 'index($2, p) == 1 {print $1}' | xargs -r docker rm -f -v`,
      );
      sh(`docker volume ls --format '{{.Name}}' | grep "^$1" | xargs -r docker volume rm -f`);
      removeTempDir(dir);
      removeTempDir(qnap.base);
    },
  };
}

/**
 * Runs SQL in a container's planetarion database and returns the output. With a timeout: a write
 * blocked by a fence left behind must fail the test, not hang it.
 */
export function sqlIn(container: string, sql: string): string {
  return execFileSync(
    'docker',
    [
      'exec',
      '-i',
      container,
      'psql',
      '-X',
      '-q',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      '-U',
      'planetarion_user',
      '-d',
      'planetarion',
    ],
    { input: sql, timeout: 120_000 },
  )
    .toString()
    .trim();
}

/** A container's health status (`healthy`, `starting`, ...). */
export const health = (name: string) =>
  execFileSync('docker', ['inspect', '-f', '{{.State.Health.Status}}', name]).toString().trim();

/** The Docker volumes whose names start with `prefix`. */
export const volumesOf = (prefix: string) =>
  execFileSync('docker', ['volume', 'ls', '-q'])
    .toString()
    .split('\n')
    .filter((v) => v.startsWith(prefix));

/** Container names with their state, for one project prefix. */
export function containersOf(project: string): Record<string, string> {
  const out = execFileSync('docker', [
    'ps',
    '-a',
    '--format',
    '{{.Names}}\t{{.State}}\t{{.Label "com.docker.compose.project"}}',
  ]).toString();
  return Object.fromEntries(
    out
      .split('\n')
      .filter((l) => l.split('\t')[2]?.startsWith(project))
      .map((l) => l.split('\t').slice(0, 2) as [string, string]),
  );
}

/**
 * The old scripts' deployment: a plain `docker-compose up` in the NAS dir (containers named
 * <project>_<service>_1), its app healthy. Returns the database container's name.
 */
export function startOldScriptStack(n: TestNas): string {
  execFileSync('docker-compose', ['-p', n.project, '-f', join(n.dir, 'docker-compose.qnap.yml'), 'up', '-d'], {
    stdio: 'ignore',
  });
  execFileSync(
    'sh',
    [
      '-c',
      `until [ "$(docker inspect -f '{{.State.Health.Status}}' "$1")" = healthy ]; do sleep 0.5; done`,
      'sh',
      `${n.project}_app_1`,
    ],
    { timeout: 180_000 },
  );
  return `${n.project}_db_1`;
}
