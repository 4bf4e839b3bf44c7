// `npm run demo`: the whole tool on this machine, no NAS needed. Starts a demo PostgreSQL container
// of its own (never an existing planetarion-db), seeds it with the Planetarion-like data, and runs
// the built executables against a temp folder laid out like the NAS share: backups, status,
// rotation, a proven restore, the cron setup (--dry-run, fake QNAP root) and an A-B deployment that
// takes the demo database over as the live slot. Prints what each step did and where the files are;
// removes everything it made (containers, volumes, folders) unless --keep.
// Needs the test bed: Docker and the planetarion-test-pg image; `npm run demo` sets it up first
// (test/env/setup.sh, a no-op when ready) and builds.
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  mkdtempSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { distBin } from '../test/helpers/cli.ts';
import { seedPlanetarion, startDb, testImage } from '../test/helpers/db.ts';
import { makeFakeQnapRoot, type FakeQnapRoot } from '../test/helpers/fake-qnap.ts';
import { backupLogName, deployLogName, launcherNames, nasComposeFileName } from '../lib/paths.ts';

const repo = join(import.meta.dirname, '..');
const commands = launcherNames;

interface Options {
  keep: boolean;
  verbose: boolean;
}

/** Parses the demo's own flags. */
export function parseDemoArgs(argv: string[]): Options | 'help' {
  const options: Options = { keep: false, verbose: false };
  for (const arg of argv) {
    if (arg === '--keep') options.keep = true;
    else if (arg === '--verbose' || arg === '-v') options.verbose = true;
    else if (arg === '--help' || arg === '-h') return 'help';
    else throw new Error(`unknown option '${arg}' (use --keep, --verbose or --help)`);
  }
  return options;
}

const help = `Usage: npm run demo [-- --keep] [-- --verbose]

Runs the built executables end to end on this machine against a demo database container of its
own and a temp folder laid out like the NAS share, printing what each step did.
  --keep      leave the containers, volumes and folders for a look around (prints how to remove them)
  --verbose   show every log line the tools print
npm run demo first makes the machine ready (test/env/setup.sh: Docker, the planetarion-test-pg
image; needs root the first time) and builds dist/ (a no-op when current).
`;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end, capturing its output. */
function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e) => resolve({ code: 127, stdout, stderr: stderr + String(e) }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const indent = (text: string, prefix = '    ') =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => prefix + l)
    .join('\n');

class Demo {
  readonly id = `planetarion-demo-${process.pid}`;
  base = '';
  nas = '';
  qnap: FakeQnapRoot | undefined;
  container = '';
  step = 0;

  constructor(readonly options: Options) {}

  env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PLANETARION_') && k !== 'DOCKER') env[k] = v;
    return {
      ...env,
      PLANETARION_DIR: this.nas,
      PLANETARION_DB_CONTAINER: this.container,
      PATH: `${this.qnap!.bin}:${process.env.PATH}`,
    };
  }

  heading(title: string): void {
    console.log(`\n== ${++this.step}. ${title}`);
  }

  /** Runs one of the NAS commands as the operator would (./name from the NAS folder); throws on an unexpected exit. */
  async tool(name: (typeof commands)[number], args: string[], expectExit = 0): Promise<Run> {
    console.log(`$ ./${name} ${args.join(' ')}`);
    const r = await run(join(this.nas, name), args, { cwd: this.nas, env: this.env() });
    if (this.options.verbose && r.stderr.trim()) console.log(indent(r.stderr));
    if (r.code !== expectExit) {
      throw new Error(
        `./${name} ${args.join(' ')} exited ${r.code} (expected ${expectExit}):\n${indent(r.stderr || r.stdout)}`,
      );
    }
    return r;
  }

  backupsOnDisk(): string[] {
    return readdirSync(join(this.nas, 'backups'))
      .filter((f) => /^planetarion_backup_\d{8}_\d{6}\./.test(f) && !/\.(json|sha256)$/.test(f))
      .sort();
  }

  async prerequisites(): Promise<void> {
    this.heading('Checking the test bed');
    const docker = await run('docker', ['version', '--format', '{{.Server.Version}}']);
    if (docker.code !== 0)
      throw new Error(
        `Docker does not answer (${(docker.stderr || docker.stdout).trim()}). Run npm run test:env (as root) first.`,
      );
    const image = await run('docker', ['image', 'inspect', '--format', '{{.Id}}', testImage]);
    if (image.code !== 0) throw new Error(`the image ${testImage} is missing. Build it with npm run test:env.`);
    console.log(`Docker ${docker.stdout.trim()}, image ${testImage}`);
    if (!existsSync(join(distBin, 'backup-database'))) {
      console.log('dist/ is not built yet: node build.mjs');
      const build = spawnSync('node', ['build.mjs'], { cwd: repo, stdio: 'inherit' });
      if (build.status !== 0) throw new Error('the build failed');
    }
    console.log(`Executables: ${relative(process.cwd(), distBin) || '.'}`);
  }

  /** A temp tree like the NAS: <base>/share/CACHEDEV1_DATA/<id> with the command links and the stack's compose file. */
  layOut(): void {
    this.heading('Laying out a NAS share in a temp folder');
    this.base = mkdtempSync(join(tmpdir(), 'planetarion-demo-'));
    // The folder's name is the compose project prefix of the deployment: one of the demo's own.
    this.nas = join(this.base, 'share/CACHEDEV1_DATA', this.id);
    mkdirSync(this.nas, { recursive: true });
    this.container = `${this.id}-db`;
    for (const name of commands) symlinkSync(join(distBin, name), join(this.nas, name));
    const fixture = readFileSync(join(repo, 'test/fixtures/stack/docker-compose.qnap.yml'), 'utf8');
    writeFileSync(
      join(this.nas, nasComposeFileName),
      fixture.replace('container_name: planetarion-db', `container_name: ${this.container}`),
    );
    this.qnap = makeFakeQnapRoot('# QNAP crontab\n0 4 * * * /sbin/hwclock -s\n');
    console.log(`NAS folder:       ${this.nas}`);
    console.log(
      `  ${commands.map((c) => `./${c}`).join('  ')} (links to the built executables), docker-compose.qnap.yml`,
    );
    console.log(`Fake QNAP root:   ${this.qnap.root} (etc/config/crontab, a recording crond.sh)`);
    console.log(`Settings for the tools: PLANETARION_DIR=${this.nas} PLANETARION_DB_CONTAINER=${this.container}`);
  }

  async database(): Promise<void> {
    this.heading(`Starting the demo database container '${this.container}' and seeding it`);
    await startDb(this.container, { labels: { 'planetarion.demo': this.id } });
    await seedPlanetarion(this.container, { scale: 0.5 });
    const counts = await run('docker', [
      'exec',
      this.container,
      'psql',
      '-X',
      '-A',
      '-t',
      '-U',
      'planetarion_user',
      '-d',
      'planetarion',
      '-c',
      "SELECT string_agg(relname || ' ' || n_live_tup, ', ' ORDER BY relname) FROM pg_stat_user_tables WHERE n_live_tup > 0",
    ]);
    console.log(
      `PostgreSQL 15 (--network none, unix socket only), Planetarion-like data: ${counts.stdout.trim() || 'seeded'}`,
    );
  }

  async backups(): Promise<void> {
    this.heading('A backup, as cron runs it at 02:00, 10:00 and 18:00');
    const first = JSON.parse((await this.tool('backup-database', ['--json'])).stdout);
    console.log(`Wrote backups/${first.file} (${first.size} bytes), its .json manifest and .sha256`);
    console.log(
      `  sha256 ${first.sha256}\n  fingerprint ${first.fingerprint} (rows and a digest of every table, sequences)`,
    );
    console.log(`Log: ${join(this.nas, 'logs', backupLogName)}`);

    this.heading('The daily check: backup-database --status');
    console.log(indent((await this.tool('backup-database', ['--status'])).stdout));

    this.heading('A second backup');
    await new Promise((r) => setTimeout(r, 1100));
    const second = JSON.parse((await this.tool('backup-database', ['--json'])).stdout);
    console.log(
      `Wrote backups/${second.file}; the fingerprint is ${second.fingerprint === first.fingerprint ? 'the same (no data changed)' : 'different'}`,
    );

    this.heading('Rotation: a third backup keeping only the newest 2');
    await new Promise((r) => setTimeout(r, 1100));
    const third = JSON.parse((await this.tool('backup-database', ['--json', '--keep', '2'])).stdout);
    if (!third.rotated.includes(first.file))
      throw new Error(`rotation did not remove ${first.file}: ${JSON.stringify(third.rotated)}`);
    console.log(
      `Wrote backups/${third.file}; rotation removed ${third.rotated.join(', ')} (only after the new one was verified)`,
    );
    console.log(`On disk now: ${this.backupsOnDisk().join(', ')}`);
  }

  async restore(): Promise<void> {
    this.heading('Restore latest, proven by its fingerprint');
    const newest = this.backupsOnDisk().pop()!;
    const manifest = JSON.parse(readFileSync(join(this.nas, 'backups', `${newest}.json`), 'utf8'));
    const r = JSON.parse((await this.tool('restore-database', ['latest', '--yes', '--json'])).stdout);
    const proven = r.winner?.fingerprint === manifest.fingerprint.sha256;
    if (!proven)
      throw new Error(
        `the restored fingerprint ${r.winner?.fingerprint} differs from the backup's ${manifest.fingerprint.sha256}`,
      );
    console.log(`Restored ${newest} into a new database beside the live one, then swapped it in by renaming.`);
    console.log(
      `  fingerprint at backup time ${manifest.fingerprint.sha256}\n  fingerprint of the restore  ${r.winner.fingerprint}  (identical: proven)`,
    );
    console.log(`The previous database is kept as '${r.winner.previousDatabase}' for ./restore-database --rollback`);
    const drill = await this.tool('restore-database', ['--test', 'latest']);
    console.log(
      `Restore drill (Sundays 04:00 on the NAS): ${drill.stderr
        .trim()
        .split('\n')
        .pop()!
        .replace(/^\[[^\]]+\] \w+ - /, '')}`,
    );
  }

  async cron(): Promise<void> {
    this.heading('The cron job, --dry-run against a fake QNAP root');
    const r = await this.tool('setup-backup-cron', ['--dry-run', '--root', this.qnap!.root]);
    console.log(indent(r.stdout));
    console.log(`(nothing written: ${this.qnap!.crontab} is unchanged)`);
  }

  async deploy(): Promise<void> {
    this.heading('A local A-B deployment (what deploy-to-qnap runs on the NAS)');
    console.log(
      `The demo database is the live deployment; the compose stack (database + a writing app) is the new one.`,
    );
    const r = JSON.parse(
      (await this.tool('deploy-to-qnap', ['--local', '--json', '--health-timeout', '90', '--root', this.qnap!.root]))
        .stdout,
    );
    console.log(`Mode: ${r.mode}; the new database got a fresh backup of the live one, restored and proven:`);
    for (const a of r.attempts ?? [])
      console.log(`  ${a.ok ? 'ok  ' : 'FAIL'} ${a.file}${a.reason ? `: ${a.reason}` : ''}`);
    if (r.backupUsed) {
      const manifest = JSON.parse(readFileSync(join(this.nas, 'backups', `${r.backupUsed}.json`), 'utf8'));
      if (manifest.fingerprint?.sha256 !== r.fingerprint)
        throw new Error(
          `the new slot's fingerprint ${r.fingerprint} differs from the backup's ${manifest.fingerprint?.sha256}`,
        );
      console.log(
        `  fingerprint at backup time ${manifest.fingerprint.sha256}\n  fingerprint in the new slot ${r.fingerprint}  (identical: proven)`,
      );
    }
    if (r.downtimeMs !== undefined)
      console.log(`Writers were down ${(r.downtimeMs / 1000).toFixed(1)} s; the switch renamed the containers.`);
    console.log(indent((await this.tool('deploy-to-qnap', ['--local', '--status'])).stdout));
    console.log(`Cron job installed in the fake QNAP crontab ${this.qnap!.crontab}:`);
    console.log(
      indent(
        readFileSync(this.qnap!.crontab, 'utf8')
          .split('\n')
          .filter((l) => l.includes('planetarion-backup:'))
          .join('\n'),
      ),
    );
  }

  summary(): void {
    this.heading('Where everything is');
    console.log(`NAS folder ${this.nas}:`);
    const list = spawnSync('sh', ['-c', 'find . -maxdepth 2 -not -name "." | sort | head -n 40'], {
      cwd: this.nas,
      encoding: 'utf8',
    });
    console.log(indent(list.stdout));
    console.log(`Logs: ${join(this.nas, 'logs', backupLogName)}, ${join(this.nas, 'logs', deployLogName)}`);
  }

  /** Container names of the demo: the standalone one and every compose slot of its folder. */
  containers(): string[] {
    const out =
      spawnSync(
        'docker',
        ['ps', '-a', '--format', '{{.Names}}\t{{.Label "com.docker.compose.project"}}\t{{.Label "planetarion.demo"}}'],
        { encoding: 'utf8' },
      ).stdout ?? '';
    return out
      .split('\n')
      .map((l) => l.split('\t'))
      .filter(
        ([name, project, demo]) =>
          name && (demo === this.id || (project ?? '').startsWith(`${this.id}-`) || name === this.container),
      )
      .map(([name]) => name!);
  }

  volumes(): string[] {
    const out = spawnSync('docker', ['volume', 'ls', '--format', '{{.Name}}'], { encoding: 'utf8' }).stdout ?? '';
    return out.split('\n').filter((v) => v.startsWith(`${this.id}-`));
  }

  cleanup(): void {
    if (this.options.keep) {
      console.log(`\nKept (--keep). Remove it all with:`);
      const names = this.containers();
      if (names.length) console.log(`  docker rm -f -v ${names.join(' ')}`);
      console.log(`  docker volume ls -q | grep '^${this.id}-' | xargs -r docker volume rm`);
      console.log(`  rm -rf ${this.base}${this.qnap ? ` ${this.qnap.base}` : ''}`);
      return;
    }
    const names = this.containers();
    if (names.length) spawnSync('docker', ['rm', '-f', '-v', ...names], { stdio: 'ignore' });
    const volumes = this.volumes();
    if (volumes.length) spawnSync('docker', ['volume', 'rm', '-f', ...volumes], { stdio: 'ignore' });
    for (const dir of [this.base, this.qnap?.base]) if (dir) rmSync(dir, { recursive: true, force: true });
    console.log(
      `\nCleaned up: ${names.length} container(s), ${volumes.length} volume(s), ${this.base}${this.qnap ? ` and ${this.qnap.base}` : ''}`,
    );
  }
}

/** Runs the demo; returns the exit code. */
async function main(argv: string[]): Promise<number> {
  let options: Options | 'help';
  try {
    options = parseDemoArgs(argv);
  } catch (error) {
    console.error(`Error: ${(error as Error).message}`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(help);
    return 0;
  }
  const demo = new Demo(options);
  let cleaned = false;
  const cleanOnce = () => {
    if (cleaned) return;
    cleaned = true;
    demo.cleanup();
  };
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping`);
    cleanOnce();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const started = Date.now();
  try {
    await demo.prerequisites();
    demo.layOut();
    await demo.database();
    await demo.backups();
    await demo.restore();
    await demo.cron();
    await demo.deploy();
    demo.summary();
    console.log(`\nDemo finished in ${((Date.now() - started) / 1000).toFixed(1)} s: every step passed.`);
    return 0;
  } catch (error) {
    console.error(`\nError: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  } finally {
    cleanOnce();
  }
}

process.exitCode = await main(process.argv.slice(2));
