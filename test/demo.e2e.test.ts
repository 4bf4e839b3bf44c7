// `npm run demo` end to end: it runs every step against the real test bed, exits 0, and leaves
// nothing behind (containers, volumes, folders); with --keep it leaves everything, and the
// commands it prints remove it.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanEnv, type ToolResult } from './helpers/cli.ts';

const repo = join(import.meta.dirname, '..');

/** Runs `npm run demo -- ARGS` from the repository. */
function demo(args: string[] = []): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = spawn('npm', ['run', '--silent', 'demo', '--', ...args], {
      cwd: repo,
      env: cleanEnv({ FORCE_COLOR: '0' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGTERM'), 300_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

interface Made {
  nas: string;
  container: string;
  /** The demo's name: the prefix of its containers, volumes and compose projects. */
  id: string;
  qnapBase: string;
}

/** What the demo says it made, from its output. */
function madeBy(stdout: string): Made {
  const nas = /^NAS folder: +(\S+)$/m.exec(stdout)?.[1];
  const container = /PLANETARION_DB_CONTAINER=(\S+)$/m.exec(stdout)?.[1];
  const qnapRoot = /^Fake QNAP root: +(\S+)/m.exec(stdout)?.[1];
  assert.ok(nas && container && qnapRoot, `the demo did not say where it put things:\n${stdout}`);
  return { nas, container, id: container.replace(/-db$/, ''), qnapBase: dirname(qnapRoot) };
}

const docker = (args: string[]) => execFileSync('docker', args).toString().split('\n').filter(Boolean);
const containersOf = (id: string) => docker(['ps', '-a', '--format', '{{.Names}}']).filter((n) => n.startsWith(id));
const volumesOf = (id: string) => docker(['volume', 'ls', '--format', '{{.Name}}']).filter((v) => v.startsWith(id));

const kept: string[] = [];
const run = suite('npm run demo');

run('runs every step against the real executables, exits 0 and removes everything it made', async () => {
  const r = await demo();
  assert.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const made = madeBy(r.stdout);
  for (const step of [
    /^\$ \.\/backup-database --json$/m,
    /^\$ \.\/backup-database --status$/m,
    /rotation removed planetarion_backup_\d{8}_\d{6}\.sql\.gz/,
    /fingerprint of the restore +[0-9a-f]{64} +\(identical: proven\)/,
    /Restore drill passed/,
    /^\$ \.\/setup-backup-cron --dry-run --root /m,
    /Dry run: .*etc\/config\/crontab would change like this \(nothing was written\)/,
    /^Mode: ab;/m,
    /fingerprint in the new slot [0-9a-f]{64} +\(identical: proven\)/,
    /every step passed/,
  ]) {
    assert.match(r.stdout, step);
  }
  // It never used the production container name.
  assert.is.not(made.container, 'planetarion-db');
  assert.match(r.stdout, /^Cleaned up: 3 container\(s\), 2 volume\(s\)/m);
  assert.equal(containersOf(made.id), []);
  assert.equal(volumesOf(made.id), []);
  assert.not.ok(existsSync(made.nas), made.nas);
  assert.not.ok(existsSync(made.qnapBase), made.qnapBase);
});

run('--keep leaves the containers and folders, and the commands it prints remove them', async () => {
  const r = await demo(['--keep']);
  assert.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const made = madeBy(r.stdout);
  kept.push(made.id);
  assert.ok(existsSync(join(made.nas, 'logs/backup.log')));
  assert.match(readFileSync(join(made.nas, 'deploy/state.json'), 'utf8'), /"live"/);
  assert.is(containersOf(made.id).length, 3);
  const removal = r.stdout
    .slice(r.stdout.indexOf('Remove it all with:'))
    .split('\n')
    .slice(1)
    .filter((l) => l.startsWith('  '))
    .join('\n');
  assert.match(removal, /docker rm -f -v /);
  execFileSync('sh', ['-e', '-c', removal]);
  assert.equal(containersOf(made.id), []);
  assert.equal(volumesOf(made.id), []);
  assert.not.ok(existsSync(made.nas));
  kept.pop();
});

run('an unknown option: exit 2, nothing started', async () => {
  const r = await demo(['--bogus']);
  assert.is(r.code, 2);
  assert.match(r.stderr, /unknown option '--bogus'/);
});

run.after(() => {
  // A failed --keep run: remove what it left.
  for (const id of kept) {
    const names = containersOf(id);
    if (names.length) execFileSync('docker', ['rm', '-f', '-v', ...names]);
    const volumes = volumesOf(id);
    if (volumes.length) execFileSync('docker', ['volume', 'rm', '-f', ...volumes]);
  }
});

run.run();
