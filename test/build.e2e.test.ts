// End-to-end checks of what `npm run build` ships (dist/bin/linux-<arch>/): the executables run
// the pinned Node without Node installed, with nothing but busybox and the folder on the machine,
// on arm64 (under qemu), within the size budget, load only the code a command needs, and two
// builds give the same files. Runs `node build.mjs` first if dist/ is missing.
// Run: node --import tsx node_modules/uvu/bin.js test 'build\.e2e' --no-color
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'node:assert/strict';
import { suite } from 'uvu';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  config: { embeddedNode: string };
};
const version = pkg.version;
/** The Node every executable embeds: pinned in package.json, a supported LTS line. */
const embeddedNode = `v${pkg.config.embeddedNode}`;
/** What `--version` prints on each architecture. */
const versionLine = (arch: string) => `planetarion-backup ${version} (node ${embeddedNode}, linux-${arch})\n`;
/** The launchers the NAS needs, whatever else the build adds. */
const requiredCommands = ['planetarion', 'backup-database', 'restore-database', 'setup-backup-cron', 'deploy-to-qnap'];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program and returns its exit code and output; never throws for a non-zero exit. */
function run(file: string, args: string[], options: SpawnSyncOptions = {}): Result {
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20, ...options });
  if (r.error) throw r.error;
  return { code: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

function ok(r: Result, what: string): Result {
  assert.equal(r.code, 0, `${what} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)],
  );
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

interface BuildInfo {
  version: string;
  node: string;
  commands: string[];
  sizeBudget: number;
  targets: Record<string, { strippedNodeBytes: number; folderBytes: number }>;
}

if (
  !existsSync(join(dist, 'build-info.json')) ||
  !existsSync(join(dist, 'bin/linux-x64')) ||
  !existsSync(join(dist, 'bin/linux-arm64'))
) {
  ok(run(process.execPath, ['build.mjs'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }), 'node build.mjs');
}
const buildInfo = JSON.parse(readFileSync(join(dist, 'build-info.json'), 'utf8')) as BuildInfo;
const commands = buildInfo.commands;
const x64 = join(dist, 'bin/linux-x64');
const arm64 = join(dist, 'bin/linux-arm64');

/** Where every temp file of this suite goes; removed at the end. */
const scratch = mkdtempSync(join(tmpdir(), 'planetarion-build-e2e-'));

/** A PATH holding only busybox applets: no node, no bash. (/usr/bin holds node on this machine.) */
function busyboxPath(): string {
  const dir = join(scratch, 'busybox-bin');
  if (existsSync(dir)) return dir;
  mkdirSync(dir);
  for (const applet of ok(run('/bin/busybox', ['--list']), 'busybox --list')
    .stdout.split('\n')
    .filter(Boolean)) {
    symlinkSync('/bin/busybox', join(dir, applet));
  }
  return dir;
}

// --- the folder itself ------------------------------------------------------------------------------
const layout = suite('build: folder layout');

layout('the build embeds the pinned Node 24 LTS', () => {
  assert.match(embeddedNode, /^v24\.\d+\.\d+$/, 'package.json config.embeddedNode');
  assert.equal(buildInfo.node, embeddedNode, 'build-info.json node');
});

layout('every architecture has the required launchers, the runtime and a matching SHA256SUMS', () => {
  for (const name of requiredCommands) assert.ok(commands.includes(name), `build-info.json lacks command ${name}`);
  for (const folder of [x64, arm64]) {
    const launchers = readdirSync(folder)
      .filter((f) => f !== 'runtime' && f !== 'SHA256SUMS')
      .sort();
    assert.deepEqual(launchers, [...commands].sort(), `${folder}: launchers`);
    for (const name of launchers) {
      const path = join(folder, name);
      assert.equal(statSync(path).mode & 0o777, 0o755, `${path} mode`);
      assert.match(readFileSync(path, 'utf8'), /^#!\/bin\/sh\n/, `${path} is a /bin/sh script`);
    }
    const listed = readFileSync(join(folder, 'SHA256SUMS'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => line.match(/^([0-9a-f]{64}) {2}(.+)$/)!.slice(1) as [string, string]);
    const files = filesUnder(folder)
      .map((f) => relative(folder, f))
      .filter((f) => f !== 'SHA256SUMS')
      .sort();
    assert.deepEqual(
      listed.map(([, f]) => f),
      files,
      `${folder}: SHA256SUMS lists every file, sorted`,
    );
    for (const [hash, file] of listed) assert.equal(sha256(join(folder, file)), hash, `${folder}/${file} hash`);
  }
});

layout('each runtime is self-contained: every NEEDED library is in runtime/, for the right machine', () => {
  for (const [folder, machine] of [
    [x64, 'Advanced Micro Devices X86-64'],
    [arm64, 'AArch64'],
  ] as const) {
    const runtime = join(folder, 'runtime');
    const present = new Set(readdirSync(runtime));
    for (const file of present) {
      const path = join(runtime, file);
      assert.ok(!lstatSync(path).isSymbolicLink(), `${path} is a real file, not a link`);
      assert.match(
        ok(run('readelf', ['-h', path]), 'readelf -h').stdout,
        new RegExp(`Machine:\\s+${machine}`),
        `${path} machine`,
      );
      for (const [, needed] of ok(run('readelf', ['-d', '-W', path]), 'readelf -d').stdout.matchAll(
        /\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g,
      )) {
        assert.ok(present.has(needed!), `${path} needs ${needed}, missing from runtime/`);
      }
    }
  }
});

layout.run();

// --- x64 on this host, without node on PATH ------------------------------------------------------------
const host = suite('build: linux-x64 on this host without node');

host('every command answers --help and --version with node nowhere on PATH', () => {
  const env = { PATH: busyboxPath() };
  assert.notEqual(run('/bin/sh', ['-c', 'which node'], { env }).code, 0, 'node must not be on PATH');
  for (const name of commands) {
    ok(run(join(x64, name), ['--help'], { env }), `${name} --help`);
    const r = ok(run(join(x64, name), ['--version'], { env }), `${name} --version`);
    assert.equal(r.stdout, versionLine('x64'), `${name} --version`);
    // disableExperimentalSEAWarning: nothing else may reach stderr (cron mails it).
    assert.equal(r.stderr, '', `${name} --version stderr`);
  }
  // A code cache this Node rejects (here: a V8 flag that changes the flag hash) must stay silent too.
  const rejected = ok(
    run(join(x64, 'backup-database'), ['--version'], { env: { ...env, NODE_OPTIONS: '--jitless' } }),
    'backup-database --version, cache rejected',
  );
  assert.deepEqual(
    [rejected.stdout, rejected.stderr],
    [versionLine('x64'), ''],
    'a rejected code cache prints nothing',
  );
  const help = ok(run(join(x64, 'backup-database'), ['--help'], { env }), 'backup-database --help').stdout;
  assert.match(help, /backup-database/, 'dispatched on its own name');
  assert.doesNotMatch(help, /^Commands:/m, 'backup-database --help is not the planetarion command list');
});

host.run();

// --- x64 in a container holding only busybox and the folder --------------------------------------------
const bare = suite('build: linux-x64 in a busybox-only container');

/**
 * An image whose root filesystem is Debian's busybox-static plus the linux-x64 folder at
 * /opt/planetarion and links to two launchers in /usr/local/bin. Tagged by a hash of its contents,
 * so an unchanged build reuses it; older tags are removed.
 */
function bareImage(): string {
  const repo = 'planetarion-build-e2e';
  // Keyed by the files themselves, not by SHA256SUMS: a folder that no longer matches its sums
  // must not be tested through an image made from the good one.
  const recipe = createHash('sha256')
    .update(
      filesUnder(x64)
        .map((f) => `${sha256(f)} ${relative(x64, f)} ${statSync(f).mode}`)
        .sort()
        .join('\n'),
    )
    .update(sha256('/bin/busybox'))
    .update(readFileSync(fileURLToPath(import.meta.url)))
    .digest('hex')
    .slice(0, 12);
  const image = `${repo}:${recipe}`;
  if (run('docker', ['image', 'inspect', image]).code === 0) return image;

  const rootfs = join(scratch, 'rootfs');
  for (const dir of ['bin', 'tmp', 'proc', 'sys', 'dev', 'etc', 'opt/planetarion/runtime', 'usr/local/bin'])
    mkdirSync(join(rootfs, dir), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  for (const applet of ok(run('/bin/busybox', ['--list']), 'busybox --list')
    .stdout.split('\n')
    .filter(Boolean)) {
    if (applet !== 'busybox') symlinkSync('busybox', join(rootfs, 'bin', applet));
  }
  for (const file of filesUnder(x64)) copyFileSync(file, join(rootfs, 'opt/planetarion', relative(x64, file)));
  ok(run('chmod', ['-R', 'u=rwX,go=rX', join(rootfs, 'opt')]), 'chmod');
  for (const name of commands) ok(run('chmod', ['0755', join(rootfs, 'opt/planetarion', name)]), 'chmod');
  ok(run('chmod', ['0755', join(rootfs, 'opt/planetarion/runtime/planetarion')]), 'chmod');
  ok(run('chmod', ['1777', join(rootfs, 'tmp')]), 'chmod');
  symlinkSync('/opt/planetarion/backup-database', join(rootfs, 'usr/local/bin/backup-database'));
  symlinkSync('/opt/planetarion/planetarion', join(rootfs, 'usr/local/bin/planetarion'));

  const old = ok(run('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}', repo]), 'docker images')
    .stdout.split('\n')
    .filter(Boolean);
  const tar = spawnSync(
    'sh',
    ['-c', `tar -C "$1" -c . | docker import -c 'ENV PATH=/usr/local/bin:/bin' - "$2"`, 'sh', rootfs, image],
    { encoding: 'utf8' },
  );
  assert.equal(tar.status, 0, `docker import: ${tar.stderr}`);
  for (const tag of old) run('docker', ['rmi', tag]);
  rmSync(rootfs, { recursive: true, force: true });
  return image;
}

let image = '';
function inBare(...args: string[]): Result {
  // The daemon here has no bridge: --network none always.
  return run('docker', ['run', '--rm', '--network', 'none', image, ...args]);
}

bare.before(() => {
  image = bareImage();
});

bare('the container really is bare: no bash, no glibc, no node, and the executable cannot start alone', () => {
  ok(
    inBare(
      '/bin/sh',
      '-c',
      'test ! -e /bin/bash && test ! -e /lib && test ! -e /lib64 && test ! -e /usr/lib && test ! -e /lib/x86_64-linux-gnu/libc.so.6 && ! which node',
    ),
    'bareness check',
  );
  // Without the launcher the kernel looks for /lib64/ld-linux-x86-64.so.2 and fails.
  assert.notEqual(
    inBare('/opt/planetarion/runtime/planetarion', '--version').code,
    0,
    'runtime/planetarion must not run without its loader',
  );
});

bare('every command answers --help and --version', () => {
  for (const name of commands) {
    ok(inBare(`/opt/planetarion/${name}`, '--help'), `${name} --help`);
    assert.equal(
      ok(inBare(`/opt/planetarion/${name}`, '--version'), `${name} --version`).stdout,
      versionLine('x64'),
      `${name} --version`,
    );
  }
});

bare('self-test runs a zx pipeline with tricky quoting through busybox sh', () => {
  const r = ok(inBare('/opt/planetarion/planetarion', 'self-test', '--json'), 'self-test');
  const result = JSON.parse(r.stdout) as { ok: boolean; version: string; arch: string; node: string; shell: string };
  assert.equal(result.ok, true, r.stdout);
  assert.equal(result.version, version);
  assert.equal(result.arch, 'x86_64');
  assert.equal(result.node, embeddedNode);
});

bare('a symlinked launcher resolves its folder and dispatches on the name it was invoked by', () => {
  const direct = ok(inBare('/usr/local/bin/backup-database', '--help'), 'symlink --help').stdout;
  assert.equal(direct, ok(inBare('/opt/planetarion/backup-database', '--help'), 'launcher --help').stdout);
  assert.doesNotMatch(direct, /^Commands:/m, 'dispatched as backup-database, not planetarion');
  // Found through PATH, as cron and an SSH user would run it.
  assert.equal(ok(inBare('backup-database', '--version'), 'backup-database via PATH').stdout, versionLine('x64'));
  assert.match(ok(inBare('planetarion', '--help'), 'planetarion via PATH').stdout, /^Commands:/m);
});

bare('an unknown command exits 2 with an error on stderr', () => {
  const r = inBare('/opt/planetarion/planetarion', 'nope');
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stderr, /unknown command 'nope'/);
  assert.equal(r.stdout, '');
});

bare.run();

// --- arm64 under qemu ------------------------------------------------------------------------------------
const arm = suite('build: linux-arm64 under qemu-aarch64');

/** Runs the arm64 executable the way its launcher does, with qemu in front of the loader. */
function arm64Exe(argv0: string, ...args: string[]): Result {
  const runtime = join(arm64, 'runtime');
  return run(
    '/usr/bin/qemu-aarch64',
    [
      join(runtime, 'ld-linux-aarch64.so.1'),
      '--library-path',
      runtime,
      '--argv0',
      argv0,
      join(runtime, 'planetarion'),
      ...args,
    ],
    {
      env: { PATH: busyboxPath() },
    },
  );
}

arm('the launcher execs the aarch64 loader with the runtime folder', () => {
  for (const name of commands) {
    assert.match(
      readFileSync(join(arm64, name), 'utf8'),
      /exec "\$d\/runtime\/ld-linux-aarch64\.so\.1" --library-path "\$d\/runtime" --argv0 "\$0" "\$d\/runtime\/planetarion" "\$@"/,
      name,
    );
  }
});

arm('dispatches on argv0 and prints the version', () => {
  const r = ok(arm64Exe('backup-database', '--version'), 'arm64 backup-database --version');
  assert.equal(r.stdout, versionLine('arm64'));
  // Its code cache was written by the arm64 Node itself; a rejected or foreign one must stay silent.
  assert.equal(r.stderr, '', 'arm64 --version stderr');
  const help = ok(arm64Exe('/some/where/backup-database', '--help'), 'arm64 backup-database --help').stdout;
  assert.doesNotMatch(help, /^Commands:/m);
  assert.match(ok(arm64Exe('planetarion', '--help'), 'arm64 planetarion --help').stdout, /^Commands:/m);
});

arm("self-test passes (its shell commands are this host's, so uname says x86_64)", () => {
  const r = ok(arm64Exe('planetarion', 'self-test', '--json'), 'arm64 self-test');
  const result = JSON.parse(r.stdout) as { ok: boolean; version: string; node: string };
  assert.equal(result.ok, true, r.stdout);
  assert.equal(result.version, version);
  assert.equal(result.node, embeddedNode);
});

arm.run();

// --- start: a command loads only its own code ------------------------------------------------------------
const lazy = suite('build: a command evaluates only the modules it needs');

interface Coverage {
  result: { functions: { functionName: string; ranges: { count: number }[] }[] }[];
}

/**
 * The bundled modules the real executable knows and the ones whose top-level code ran, from V8's
 * coverage (NODE_V8_COVERAGE). esbuild names the init function of every lazily evaluated module
 * after its path, so a module that is evaluated at start (no longer lazy) has no such function
 * and is missing from `known`.
 */
function modulesEvaluated(name: string, args: string[]): { known: Set<string>; ran: Set<string> } {
  const dir = mkdtempSync(join(scratch, 'coverage-'));
  ok(run(join(x64, name), args, { env: { PATH: busyboxPath(), NODE_V8_COVERAGE: dir } }), `${name} ${args.join(' ')}`);
  const known = new Set<string>();
  const ran = new Set<string>();
  for (const file of readdirSync(dir)) {
    for (const script of (JSON.parse(readFileSync(join(dir, file), 'utf8')) as Coverage).result) {
      for (const fn of script.functions) {
        if (!/^(lib|scripts|node_modules)\/.+\.[cm]?[jt]s$/.test(fn.functionName)) continue;
        known.add(fn.functionName);
        if (fn.ranges[0]!.count > 0) ran.add(fn.functionName);
      }
    }
  }
  return { known, ran };
}

/** What `backup-database --version` and `--help` must not evaluate: the libraries and every other command's code. */
const notForHelp = {
  'age-encryption': /^node_modules\/(age-encryption|@noble|@scure)\//,
  yaml: /^node_modules\/yaml\//,
  zx: /^node_modules\/zx\//,
  'the backup itself': /^lib\/(backup\/run|dump\/pg-dump|dump\/fingerprint|host\/shell)\.ts$/,
  'the other commands': /^scripts\/(restore-database|setup-backup-cron|deploy-to-qnap|self-test)\.ts$/,
  'their libraries':
    /^lib\/(restore\/attempt|restore\/flow|deploy\/flow|remote\/run|host\/compose|cron\/setup|remote\/upload|remote\/ssh)\.ts$/,
};

for (const args of [['--version'], ['--help']]) {
  lazy(`backup-database ${args[0]} evaluates neither the libraries nor the other commands`, () => {
    const { known, ran } = modulesEvaluated('backup-database', args);
    assert.ok(
      ran.has('scripts/backup-database.ts'),
      `the probe sees the command's own module run: ${[...ran].join(' ')}`,
    );
    for (const [what, pattern] of Object.entries(notForHelp)) {
      const modules = [...known].filter((m) => pattern.test(m));
      assert.ok(modules.length > 0, `${what}: no lazily evaluated module matches ${pattern} (evaluated at start?)`);
      assert.deepEqual(
        modules.filter((m) => ran.has(m)),
        [],
        `${what} evaluated by backup-database ${args[0]}`,
      );
    }
  });
}

lazy('planetarion --version evaluates no command at all', () => {
  const { ran } = modulesEvaluated('planetarion', ['--version']);
  assert.deepEqual(
    [...ran].filter((m) => m.startsWith('scripts/') || m.startsWith('node_modules/')),
    [],
  );
});

lazy.run();

// --- reproducible: deploy skips files whose SHA256SUMS entry matches --------------------------------------
const repro = suite('build: two builds give the same files');

repro('a second build into another folder has the same SHA256SUMS, code caches included', () => {
  const other = join(scratch, 'dist-again');
  ok(
    run(process.execPath, ['build.mjs', '--dist', other], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 600_000,
    }),
    'node build.mjs --dist',
  );
  for (const arch of ['x64', 'arm64']) {
    const sums = readFileSync(join(dist, 'bin', `linux-${arch}`, 'SHA256SUMS'), 'utf8');
    assert.equal(
      readFileSync(join(other, 'bin', `linux-${arch}`, 'SHA256SUMS'), 'utf8'),
      sums,
      `linux-${arch} SHA256SUMS`,
    );
  }
  rmSync(other, { recursive: true, force: true });
});

repro.run();

// --- size budget -------------------------------------------------------------------------------------------
const size = suite('build: size budget');

size('each folder is at most 1.10 x the stripped Node binary', () => {
  const nodeVersion = buildInfo.node.replace(/^v/, '');
  for (const [arch, strip] of [
    ['x64', 'strip'],
    ['arm64', 'aarch64-linux-gnu-strip'],
  ] as const) {
    // Strip our own copy of the untouched base binary rather than trusting the build's figures.
    const base = join(root, '.cache/node', `${arch}-${nodeVersion}`, 'node');
    assert.ok(existsSync(base), `${base} (cached by build.mjs)`);
    const copy = join(scratch, `node-${arch}`);
    copyFileSync(base, copy);
    ok(run(strip, [copy]), `${strip}`);
    const stripped = statSync(copy).size;
    rmSync(copy);
    const folder = join(dist, 'bin', `linux-${arch}`);
    const total = filesUnder(folder).reduce((sum, f) => sum + statSync(f).size, 0);
    const ratio = total / stripped;
    assert.ok(
      ratio <= 1.1,
      `linux-${arch}: ${total} bytes is ${ratio.toFixed(3)} x stripped node (${stripped}); budget 1.10`,
    );
    assert.equal(buildInfo.targets[arch]!.folderBytes, total, `build-info.json folderBytes for ${arch}`);
    assert.equal(buildInfo.targets[arch]!.strippedNodeBytes, stripped, `build-info.json strippedNodeBytes for ${arch}`);
  }
});

size.after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

size.run();
