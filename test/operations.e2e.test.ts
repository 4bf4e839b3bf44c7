// docs/OPERATIONS.md is tested as the operator would use it: every ```sh runnable block runs, in
// order, with `sh -e` in a test NAS folder (the command links beside it, a deployed stack, the
// Planetarion-like seed), and must exit 0. Every troubleshooting entry (```text error=ID) is
// provoked for real; the lines printed must match the guide's (… matches anything), and the
// entry's fix (```sh runnable fix=ID) must then make the tools work again. The guide writes the
// QNAP's plain values (its folder, `planetarion-db`, an example backup name): the test runs each
// block with the test NAS's folder, container and newest backup in their place. Each line of an
// everyday-task block (```sh task) must be one of the runnable blocks' lines, so it is tested too.
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanEnv, runTool, type ToolResult } from './helpers/cli.ts';
import { seedPlanetarion } from './helpers/db.ts';
import { resealBackup } from './helpers/restore-checks.ts';
import { makeTestNas, type TestNas } from './helpers/stack.ts';

const repo = join(import.meta.dirname, '..');
const guidePath = join(repo, 'docs/OPERATIONS.md');
/** What the guide shows in place of the test NAS's folder and container. */
const qnapDir = '/share/CACHEDEV1_DATA/planetarion';
const qnapContainer = 'planetarion-db';
/** The backup name the guide uses as its example of "a file --status listed". */
const exampleBackup = 'planetarion_backup_20261130_100000.sql.gz';

export interface FencedBlock {
  /** The words of the info string: ['sh', 'runnable', 'fix=no-space']. */
  info: string[];
  code: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** The nearest heading above it. */
  heading: string;
}

/** Every fenced code block of a Markdown text, with its info string and the heading it is under. */
export function fencedBlocks(markdown: string): FencedBlock[] {
  const blocks: FencedBlock[] = [];
  const lines = markdown.split('\n');
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^#{1,6} /.test(line)) heading = line.replace(/^#+ /, '');
    const open = /^(```+)\s*(.*)$/.exec(line);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i]!.startsWith(open[1]!); i++) body.push(lines[i]!);
    blocks.push({
      info: open[2]!.trim().split(/\s+/).filter(Boolean),
      code: `${body.join('\n')}\n`,
      line: start + 1,
      heading,
    });
  }
  return blocks;
}

const attr = (block: FencedBlock, key: string) =>
  block.info.find((w) => w.startsWith(`${key}=`))?.slice(key.length + 1);

/** A line of the guide as a pattern: literal text, `…` matching anything. */
export function linePattern(line: string): RegExp {
  return new RegExp(
    `^${line
      .split('…')
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*?')}$`,
  );
}

const guide = fencedBlocks(readFileSync(guidePath, 'utf8'));
const runnable = guide.filter((b) => b.info[0] === 'sh' && b.info.includes('runnable'));
const steps = runnable.filter((b) => attr(b, 'fix') === undefined);
const fixes = new Map(runnable.filter((b) => attr(b, 'fix') !== undefined).map((b) => [attr(b, 'fix')!, b]));
const messages = new Map(guide.filter((b) => attr(b, 'error') !== undefined).map((b) => [attr(b, 'error')!, b]));
const tasks = guide.filter((b) => b.info[0] === 'sh' && b.info.includes('task'));

let n: TestNas | undefined;
let ready = false;
let holder: ReturnType<typeof spawn> | undefined;

/** The guide's plain QNAP values replaced by the test NAS's: its folder, its container, its newest backup. */
function onTestNas(script: string): string {
  const example = script.includes(exampleBackup) ? newestBackup() : exampleBackup;
  return script.replaceAll(qnapDir, n!.dir).replaceAll(qnapContainer, n!.container).replaceAll(exampleBackup, example);
}

/** Runs a shell script in the test NAS folder with its environment (as the operator's SSH session). */
function shell(guideScript: string, options: { asNobody?: boolean; timeoutMs?: number } = {}): Promise<ToolResult> {
  const script = onTestNas(guideScript);
  const argv = options.asNobody
    ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'sh', '-e', '-c', script]
    : ['sh', '-e', '-c', script];
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: n!.dir,
      env: cleanEnv(n!.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The output with the test NAS's folder and container shown as the guide shows the QNAP's. */
function asOnQnap(text: string): string[] {
  return text
    .replaceAll(n!.dir, qnapDir)
    .replaceAll(n!.container, qnapContainer)
    .split('\n')
    .map((l) => l.trimEnd());
}

/** Every line of the guide's message block appears in the output, in the guide's order. */
function assertMessage(id: string, result: ToolResult): void {
  const block = messages.get(id);
  assert.ok(block, `docs/OPERATIONS.md has no \`\`\`text error=${id} block`);
  const printed = asOnQnap(`${result.stdout}\n${result.stderr}`);
  let from = 0;
  for (const line of block.code.trimEnd().split('\n')) {
    const pattern = linePattern(line);
    const at = printed.findIndex((p, i) => i >= from && pattern.test(p));
    assert.ok(
      at >= 0,
      `error=${id}: the guide's line\n  ${line}\nwas not printed (in this order); the tools printed:\n${printed.join('\n')}`,
    );
    from = at + 1;
  }
}

/** Runs an entry's fix block; it must succeed (the tools work again). */
async function runFix(id: string): Promise<void> {
  const block = fixes.get(id);
  assert.ok(block, `docs/OPERATIONS.md has no \`\`\`sh runnable fix=${id} block`);
  const r = await shell(block.code);
  assert.is(r.code, 0, `fix=${id} (docs/OPERATIONS.md line ${block.line}) exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
}

const newestBackup = () =>
  readdirSync(join(n!.dir, 'backups'))
    .filter((f) => /^planetarion_backup_\d{8}_\d{6}\.sql\.gz$/.test(f))
    .sort()
    .pop()!;

/** Changes one value in the research table of a backup and keeps its checksum and manifest consistent, so only the fingerprint can tell. */
function tamperConsistently(file: string): void {
  const path = join(n!.dir, 'backups', file);
  const sql = gunzipSync(readFileSync(path)).toString('utf8');
  const rowAt = sql.indexOf('\n', sql.indexOf('COPY public.research ')) + 1;
  const rowEnd = sql.indexOf('\n', rowAt);
  const row = sql.slice(rowAt, rowEnd).split('\t');
  row[2] = String(Number(row[2]) + 1); // research (user_id, tech, level, completed_at)
  const bytes = gzipSync(Buffer.from(sql.slice(0, rowAt) + row.join('\t') + sql.slice(rowEnd)));
  resealBackup(path, bytes);
}

const umount = (path: string) => spawnSync('umount', [path], { stdio: 'ignore' });

interface Failure {
  /** Makes the failure happen and returns what the tool printed. */
  provoke(): Promise<ToolResult>;
  exitCode: number;
  /** Undoes what the provocation did that the operator's fix cannot (a test mount). */
  undo?(): void;
  /** The guide's fix block run afterwards (none: a later entry's fix covers it). */
  fix?: string;
}

/** Each troubleshooting entry of the guide, provoked for real. */
const failures: Record<string, Failure> = {
  'container-not-running': {
    async provoke() {
      execFileSync('docker', ['stop', '-t', '5', n!.container]);
      return shell('./backup-database');
    },
    exitCode: 1,
    fix: 'container-not-running',
  },
  'permission-denied-backups': {
    // The folders belong to root; the backup runs as another user.
    async provoke() {
      chmodSync(n!.dir, 0o755);
      return shell('./backup-database', { asNobody: true });
    },
    exitCode: 1,
  },
  'permission-denied-logs': {
    async provoke() {
      chownSync(join(n!.dir, 'backups'), 65534, 65534);
      return shell('./backup-database', { asNobody: true });
    },
    exitCode: 1,
    fix: 'permission-denied',
  },
  'cron-not-installed': {
    async provoke() {
      const removed = await shell('./setup-backup-cron --uninstall');
      assert.is(removed.code, 0, removed.stderr);
      return shell('./setup-backup-cron --status');
    },
    exitCode: 0,
    fix: 'cron-not-installed',
  },
  'lock-held': {
    // A real holder of the shared lock (as a long restore or deploy would be) for a few seconds.
    async provoke() {
      holder = spawn('node', ['--import', 'tsx', 'test/fixtures/hold-lock.ts', n!.dir, '6000'], {
        cwd: repo,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await new Promise<void>((resolve, reject) => {
        holder!.stdout!.setEncoding('utf8').on('data', (d: string) => d.includes('locked') && resolve());
        holder!.on('close', (code) => reject(new Error(`hold-lock exited ${code} before taking the lock`)));
      });
      return shell('./backup-database');
    },
    exitCode: 75,
    fix: 'lock-held',
  },
  'fingerprint-mismatch': {
    async provoke() {
      tamperConsistently(newestBackup());
      return shell('./restore-database latest --yes');
    },
    exitCode: 1,
    fix: 'fingerprint-mismatch',
  },
  'no-space-before': {
    // A nearly full filesystem mounted on the backup folder.
    async provoke() {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', join(n!.dir, 'backups')]);
      return shell('./backup-database');
    },
    exitCode: 1,
    undo: () => umount(join(n!.dir, 'backups')),
  },
  'no-space-during': {
    // Room for a backup the size of the last one (a tiny one), not for this dump.
    async provoke() {
      const backups = join(n!.dir, 'backups');
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32k,mode=0700', 'tmpfs', backups]);
      writeFileSync(join(backups, 'planetarion_backup_20231201_020000.sql'), 'x');
      return shell('./backup-database --compress none');
    },
    exitCode: 1,
    undo: () => umount(join(n!.dir, 'backups')),
    fix: 'no-space',
  },
};

const ops = suite('docs/OPERATIONS.md');

ops(
  'setup: a test NAS with a first deployment and the Planetarion-like seed; the guide has runnable blocks and troubleshooting entries',
  async () => {
    assert.ok(steps.length >= 10, `only ${steps.length} runnable blocks found`);
    n = makeTestNas();
    // Generic mode: the cron job goes to the recording `crontab` first on PATH, never the machine's.
    const first = await runTool('deploy-to-qnap', ['--local', '--health-timeout', '180'], n.env);
    assert.is(first.code, 0, first.stderr);
    await seedPlanetarion(n.container, { scale: 0.2 });
    ready = true;
  },
);

ops(
  'every troubleshooting entry of the guide is provoked by this test, and every provoked failure is in the guide',
  () => {
    assert.equal([...messages.keys()].sort(), Object.keys(failures).sort());
    for (const failure of Object.values(failures))
      if (failure.fix) assert.ok(fixes.has(failure.fix), `no fix=${failure.fix} block`);
    assert.equal(
      [...fixes.keys()].sort(),
      [...new Set(Object.values(failures).flatMap((f) => (f.fix ? [f.fix] : [])))].sort(),
    );
  },
);

/** A command line of a block, without its comment and without --yes (the guide's tasks let the tool ask). */
const commandLines = (code: string) =>
  code
    .split('\n')
    .map((l) =>
      l
        .replace(/\s+#.*$/, '')
        .replace(/ --yes\b/g, '')
        .trim(),
    )
    .filter((l) => l && !l.startsWith('#'));

ops('the everyday tasks: five blocks, each of whose commands a runnable block runs', () => {
  assert.is(tasks.length, 5);
  const tested = new Set(runnable.flatMap((b) => commandLines(b.code)));
  for (const block of tasks) {
    for (const line of commandLines(block.code)) {
      if (line.startsWith('deploy-to-qnap')) continue; // the workstation's: it runs ./deploy-to-qnap --local on the NAS, which is tested
      assert.ok(tested.has(line), `docs/OPERATIONS.md line ${block.line}: '${line}' is in no runnable block`);
    }
  }
});

for (const block of steps) {
  ops(`runs the block at line ${block.line} (${block.heading})`, async () => {
    assert.ok(ready, 'setup failed');
    const r = await shell(block.code);
    assert.is(
      r.code,
      0,
      `docs/OPERATIONS.md line ${block.line} exited ${r.code}:\n${block.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`,
    );
  });
}

for (const [id, failure] of Object.entries(failures)) {
  ops(
    `troubleshooting ${id}: the message printed is the guide's${failure.fix ? ', and its fix works' : ''}`,
    async () => {
      assert.ok(ready, 'setup failed');
      let result: ToolResult;
      try {
        result = await failure.provoke();
      } finally {
        failure.undo?.();
      }
      // The fix runs even when the message is wrong, so one failing entry does not break the next.
      let wrongMessage: unknown;
      try {
        assert.is(result.code, failure.exitCode, `exit ${result.code}:\n${result.stderr}`);
        assertMessage(id, result);
      } catch (error) {
        wrongMessage = error;
      }
      if (failure.fix) await runFix(failure.fix);
      if (wrongMessage) throw wrongMessage;
    },
  );
}

ops.after(() => {
  holder?.kill('SIGKILL');
  if (!n) return;
  umount(join(n.dir, 'backups'));
  n.cleanup();
});

ops.run();
