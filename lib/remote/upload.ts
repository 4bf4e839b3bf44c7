// What the workstation puts on the NAS before the A-B flow runs there: a check that the NAS can
// run the executables at all, the executables of its architecture (one runtime, every command
// name a link to its launcher), single files renamed into place, and Docker images.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { locateDocker } from '../host/docker-binary.ts';
import { CliError } from '../errors.ts';
import type { Ssh } from './ssh.ts';

/** Build folders (dist/bin/<folder>) by the `uname -m` answers that select them. */
const folderByMachine: Record<string, string> = {
  x86_64: 'linux-x64',
  amd64: 'linux-x64',
  aarch64: 'linux-arm64',
  arm64: 'linux-arm64',
};

/** The oldest kernel the bundled glibc 2.36 starts on (its configured floor). */
export const minimumKernel: readonly [number, number] = [3, 2];

/** Every build folder this tool knows how to make, in the order messages list them. */
export const knownBuildFolders = ['linux-x64', 'linux-arm64'] as const;

export interface NasPlatform {
  /** `uname -m`. */
  machine: string;
  /** `uname -r`. */
  kernel: string;
  /** The build folder to upload, e.g. linux-x64. */
  folder: string;
}

/**
 * Which build folder a NAS needs, from its `uname -m` and `uname -r`; a CliError (exit 1) with
 * the reason when none can run there. `available` lists the build folders at hand. Pure.
 */
export function choosePlatform(
  machine: string,
  kernel: string,
  available: readonly string[] = knownBuildFolders,
): NasPlatform {
  const m = machine.trim();
  const k = kernel.trim();
  const folder = folderByMachine[m];
  const builds = Object.entries(folderByMachine)
    .filter(([name, f]) => available.includes(f) && !['amd64', 'arm64'].includes(name))
    .map(([name, f]) => `${name} (${f})`);
  if (!folder) {
    throw new CliError(`the NAS's architecture '${m}' has no build of these executables`, {
      advice: `Builds exist for ${builds.join(' and ') || 'no architecture'}.${/^arm/.test(m) ? ' 32-bit ARM NAS models are not supported yet.' : ''} Nothing was changed on the NAS.`,
    });
  }
  if (!available.includes(folder)) {
    throw new CliError(`the NAS needs the ${folder} executables (uname -m: ${m}), which are not in this build`, {
      advice: `Run 'npm run build' to build every architecture (builds at hand: ${builds.join(', ') || 'none'}).`,
    });
  }
  const version = /^(\d+)\.(\d+)/.exec(k);
  if (!version)
    throw new CliError(`cannot read the NAS's kernel version from 'uname -r': '${k}'`, {
      advice: 'Nothing was changed on the NAS.',
    });
  const [major, minor] = [Number(version[1]), Number(version[2])];
  if (major < minimumKernel[0] || (major === minimumKernel[0] && minor < minimumKernel[1])) {
    throw new CliError(
      `the NAS's Linux kernel ${k} is older than ${minimumKernel.join('.')}, the oldest the bundled C library (glibc 2.36) runs on`,
      {
        advice: 'Update the NAS firmware (QTS) to run these executables. Nothing was changed on the NAS.',
      },
    );
  }
  return { machine: m, kernel: k, folder };
}

export interface NasInfo extends NasPlatform {
  /** The SSH user, as the NAS names it (`id -un`). */
  user: string;
  projectDir: string;
  /** Whether the project dir exists already (else its nearest existing parent is writable). */
  projectDirExists: boolean;
}

/** Prints the facts probeNas decides on, as KEY=VALUE lines; changes nothing. `$1` is the project dir. */
const probeScript = `
echo "machine=$(uname -m)"
echo "kernel=$(uname -r)"
echo "user=$(id -un 2>/dev/null || whoami 2>/dev/null || echo unknown)"
d=$1
if [ -d "$d" ]; then
  echo exists=yes
  if [ -w "$d" ]; then echo writable=yes; else echo writable=no; fi
elif [ -e "$d" ] || [ -L "$d" ]; then
  echo exists=notdir
else
  echo exists=no
  p=$(dirname "$d")
  while [ ! -e "$p" ]; do p=$(dirname "$p"); done
  echo "parent=$p"
  if [ -d "$p" ] && [ -w "$p" ]; then echo writable=yes; else echo writable=no; fi
fi
`;

function keyValues(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/**
 * Learns the NAS's architecture and kernel and checks the project dir exists or can be created
 * and is writable. Refuses (CliError, exit 1, nothing changed) a NAS the executables cannot run
 * on or a dir the user cannot write. One round trip; the decisions are choosePlatform's.
 */
export async function probeNas(
  ssh: Ssh,
  projectDir: string,
  available: readonly string[] = knownBuildFolders,
): Promise<NasInfo> {
  const facts = keyValues(
    await ssh.check(['sh', '-c', probeScript, 'sh', projectDir], 'probing the NAS (uname, id, test -w)'),
  );
  const platform = choosePlatform(facts.get('machine') ?? '', facts.get('kernel') ?? '', available);
  const user = facts.get('user') ?? ssh.target.user;
  const exists = facts.get('exists');
  if (exists === 'notdir') {
    throw new CliError(`${projectDir} on the NAS exists but is not a directory`, {
      advice: 'Set QNAP_PROJECT_DIR (--project-dir) to a directory. Nothing was changed on the NAS.',
    });
  }
  if (facts.get('writable') !== 'yes') {
    const what =
      exists === 'yes'
        ? `the project dir ${projectDir}`
        : `${facts.get('parent')}, where the project dir ${projectDir} would be created,`;
    throw new CliError(`${what} is not writable by the NAS user '${user}'`, {
      advice: `Make it writable for '${user}' (or deploy as a user who can write there, QNAP_USER), or choose another QNAP_PROJECT_DIR (--project-dir). Nothing was changed on the NAS.`,
    });
  }
  return { ...platform, user, projectDir, projectDirExists: exists === 'yes' };
}

/** Build folders (dist/bin/<folder> with a SHA256SUMS) present under binRoot. */
export function availableBuilds(binRoot: string): string[] {
  return knownBuildFolders.filter((f) => existsSync(join(binRoot, f, 'SHA256SUMS')));
}

/**
 * The folder holding the build folders: beside this executable's own folder when running as the
 * built executable (its launcher path is process.argv0, through links), else the checkout's dist/bin.
 */
export async function localBinRoot(): Promise<string> {
  // getBuiltinModule, not import(): a dynamic import fails inside a SEA built with a code cache,
  // and that failure must not read as "not a SEA".
  if (process.getBuiltinModule('node:sea').isSea()) return dirname(dirname(realpathSync(process.argv0)));
  // import.meta.url, not import.meta.dirname: the bundle defines only the former (build.mjs).
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'bin');
}

/** The files SHA256SUMS lists, and the command names among them (the launchers at the top level). */
function readSums(localFolder: string): { text: string; files: string[]; commands: string[] } {
  let text: string;
  try {
    text = readFileSync(join(localFolder, 'SHA256SUMS'), 'utf8');
  } catch (error) {
    throw new CliError(`${localFolder} holds no SHA256SUMS: it is not a build of the executables`, {
      advice: "Run 'npm run build' and try again.",
      cause: error,
    });
  }
  const files = text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.replace(/^[0-9a-f]{64} [ *]/, ''));
  return { text, files, commands: files.filter((f) => !f.includes('/')) };
}

export interface ExecutablesUpload {
  action: 'uploaded' | 'skipped';
  /** Bytes copied (0 when skipped). */
  bytes: number;
  /** `<projectDir>/bin`. */
  remoteBin: string;
  /** The command names linked in the project dir (`<projectDir>/<name>` -> bin/<name>). */
  commands: string[];
  /** What `planetarion self-test --json` said on the NAS (uploaded only). */
  selfTest?: Record<string, unknown>;
}

/** Creates `<dir>/<name>` -> bin/<name> for every name given after $1; refuses to replace a directory. */
const linkScript = `
d=$1; shift
for n in "$@"; do
  if [ -d "$d/$n" ] && [ ! -L "$d/$n" ]; then echo "$d/$n is a directory; not replacing it with a link" >&2; exit 1; fi
  ln -sf "bin/$n" "$d/$n"
done
`;

/** Removes upload folders that crashed runs left behind over an hour ago. */
const prepareScript = `
d=$1; tmp=$2; need_kb=$3
mkdir -p "$d"
find "$d" -maxdepth 1 -name '.bin.upload-*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
rm -rf "$tmp"
free_kb=$(df -Pk "$d" 2>/dev/null | awk 'NR==2 {print $4}')
case $free_kb in ''|*[!0-9]*) exit 0;; esac
if [ "$free_kb" -lt "$need_kb" ]; then
  echo "not enough space in $d: $((need_kb / 1024)) MB needed, $((free_kb / 1024)) MB free" >&2
  exit 3
fi
`;

/** Checks the uploaded copy against SHA256SUMS (where the NAS has sha256sum) and runs its self-test. */
const verifyScript = `
cd "$1"
if command -v sha256sum >/dev/null 2>&1; then
  sha256sum -c SHA256SUMS >/dev/null || { echo "the uploaded files do not match SHA256SUMS" >&2; sha256sum -c SHA256SUMS 2>&1 | grep -v ': OK$' >&2; exit 1; }
fi
exec ./planetarion self-test --json
`;

/** Puts the uploaded folder in place of bin; the old one is removed after. */
const swapScript = `
d=$1; tmp=$2; old=$d/.bin.old-$3
rm -rf "$old"
if [ -e "$d/bin" ] || [ -L "$d/bin" ]; then mv "$d/bin" "$old"; fi
mv "$tmp" "$d/bin"
rm -rf "$old"
`;

function parseSelfTest(output: string): Record<string, unknown> | undefined {
  try {
    const parsed = JSON.parse(output.trim().split('\n').pop() ?? '') as Record<string, unknown>;
    return parsed.ok === true ? parsed : undefined;
  } catch {
    return undefined;
  }
}

function treeBytes(folder: string): number {
  let total = 0;
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name);
    total += entry.isDirectory() ? treeBytes(path) : statSync(path).size;
  }
  return total;
}

/**
 * Uploads a build folder (dist/bin/linux-<arch>) to `<projectDir>/bin` and links every command
 * name in projectDir to it. Skipped when the NAS's bin/SHA256SUMS equals the local one.
 * Otherwise scp -r to `<projectDir>/.bin.upload-<pid>`, check the copy (sha256sum -c and
 * `planetarion self-test --json` run from it), and only then swap it in with mv: a copy that
 * cannot run on the NAS never replaces working executables.
 */
export async function uploadExecutables(ssh: Ssh, localFolder: string, projectDir: string): Promise<ExecutablesUpload> {
  const sums = readSums(localFolder);
  const remoteBin = `${projectDir}/bin`;
  const link = async () => {
    await ssh.check(
      ['sh', '-c', linkScript, 'sh', projectDir, ...sums.commands],
      `linking the command names in ${projectDir}`,
    );
  };

  const remoteSums = await ssh.run(['cat', `${remoteBin}/SHA256SUMS`]);
  if (remoteSums.exitCode === 0 && remoteSums.stdout === sums.text) {
    await link();
    return { action: 'skipped', bytes: 0, remoteBin, commands: sums.commands };
  }

  const bytes = treeBytes(localFolder);
  const tmp = `${projectDir}/.bin.upload-${process.pid}`;
  // Room for the new copy beside the old one, plus 10%.
  const needKb = Math.ceil((bytes * 1.1) / 1024);
  const prepared = await ssh.run(['sh', '-c', prepareScript, 'sh', projectDir, tmp, String(needKb)]);
  if (prepared.exitCode !== 0) {
    throw new CliError(
      `preparing ${projectDir} on the NAS failed: ${prepared.stderr.trim() || `exit ${prepared.exitCode}`}`,
      {
        advice:
          prepared.exitCode === 3 ? 'Free some space on that volume, or choose another QNAP_PROJECT_DIR.' : undefined,
      },
    );
  }
  let selfTest: Record<string, unknown> | undefined;
  try {
    await ssh.copy(localFolder, tmp, { recursive: true });
    const verified = await ssh.run(['sh', '-c', verifyScript, 'sh', tmp]);
    selfTest = verified.exitCode === 0 ? parseSelfTest(verified.stdout) : undefined;
    if (!selfTest) {
      const said = `${verified.stderr}\n${verified.stdout}`.trim().split('\n').slice(-6).join('\n');
      throw new CliError(`the uploaded executables do not run on the NAS (exit ${verified.exitCode}): ${said}`, {
        advice: `The executables in ${remoteBin} were left as they were. Check the build (npm run build) and the NAS (uname -m, free space).`,
      });
    }
    await ssh.check(
      ['sh', '-c', swapScript, 'sh', projectDir, tmp, String(process.pid)],
      `moving the executables into ${remoteBin}`,
    );
  } catch (error) {
    await ssh.run(['rm', '-rf', tmp]).catch(() => undefined);
    throw error;
  }
  await link();
  return { action: 'uploaded', bytes, remoteBin, commands: sums.commands, selfTest };
}

export interface FileUpload {
  remotePath: string;
  bytes: number;
}

/** Moves the uploaded file from its private temp folder into place, with its mode. */
const placeFileScript = `
tmpdir=$1; name=$2; dest=$3; mode=$4
chmod "$mode" "$tmpdir/$name" && mv -f "$tmpdir/$name" "$dest"
rc=$?
rm -rf "$tmpdir"
exit $rc
`;

/**
 * Uploads one file to an absolute path on the NAS: into a private temp folder (mode 0700) in the
 * same dir, chmod, then renamed into place, so readers see the old file or the whole new one,
 * and a settings file is never readable by others on the way. Mode defaults to 0600.
 */
export async function uploadFile(
  ssh: Ssh,
  localPath: string,
  remotePath: string,
  options: { mode?: number } = {},
): Promise<FileUpload> {
  let bytes: number;
  try {
    bytes = statSync(localPath).size;
  } catch (error) {
    throw new CliError(`${localPath} cannot be read`, {
      advice: 'Check the path (DOCKER_COMPOSE_FILE, --compose-file) and run again.',
      cause: error,
    });
  }
  const dir = dirname(remotePath);
  const tmpDir = `${dir}/.upload-${process.pid}-${basename(remotePath)}`;
  await ssh.check(
    ['sh', '-c', 'mkdir -p "$1" && rm -rf "$2" && mkdir -m 700 "$2"', 'sh', dir, tmpDir],
    `preparing ${dir}`,
  );
  try {
    await ssh.copy(localPath, `${tmpDir}/${basename(remotePath)}`);
  } catch (error) {
    await ssh.run(['rm', '-rf', tmpDir]).catch(() => undefined);
    throw error;
  }
  const mode = (options.mode ?? 0o600).toString(8).padStart(4, '0');
  await ssh.check(
    ['sh', '-c', placeFileScript, 'sh', tmpDir, basename(remotePath), remotePath, mode],
    `renaming ${basename(remotePath)} into place`,
  );
  return { remotePath, bytes };
}

/**
 * A remote sh snippet that runs docker with "$@": the one on PATH, else Container Station's
 * (an SSH session's PATH on QNAP often lacks it). Exit 127 with a message when there is none.
 */
export const remoteDockerScript = `
d=$(command -v docker 2>/dev/null) || d=
if [ -z "$d" ]; then
  for c in /share/*/.qpkg/container-station/bin/docker; do
    if [ -x "$c" ]; then d=$c; break; fi
  done
fi
if [ -z "$d" ]; then
  echo "docker was not found on the NAS (not on PATH, not in /share/*/.qpkg/container-station/bin): is Container Station installed and running?" >&2
  exit 127
fi
exec "$d" "$@"
`;

/** argv that runs `docker <args>` on the NAS through remoteDockerScript. */
export function remoteDocker(args: readonly string[]): string[] {
  return ['sh', '-c', remoteDockerScript, 'sh', ...args];
}

export interface ImageShipment {
  image: string;
  /** The image ID on both sides. */
  id: string;
  action: 'shipped' | 'skipped';
  /** Bytes streamed (0 when skipped). */
  bytes: number;
}

/** The local image's ID, or a CliError when there is no such image. */
function localImageId(docker: string, image: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(docker, ['image', 'inspect', '--format', '{{.Id}}', image], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolvePromise(out.trim());
      else
        reject(
          new CliError(`the image '${image}' is not on this machine: ${err.trim()}`, {
            advice: 'Build or pull it here first (docker images lists what there is).',
          }),
        );
    });
  });
}

/**
 * Ships a local Docker image to the NAS: `docker save IMAGE | ssh ... docker load`, streamed
 * with backpressure (never held in memory), tagged there `as` (default: its own name). Skipped
 * when the NAS already has that name with the same image ID; afterwards the NAS's ID is checked
 * against ours.
 */
export async function shipImage(
  ssh: Ssh,
  image: string,
  options: { docker?: string; as?: string } = {},
): Promise<ImageShipment> {
  const docker = options.docker ?? locateDocker();
  const id = await localImageId(docker, image);
  const name = options.as ?? image;
  const remoteId = async () => {
    const r = await ssh.run(remoteDocker(['image', 'inspect', '--format', '{{.Id}}', name]));
    // The snippet's message is its last line (login scripts on the NAS may print before it).
    if (r.exitCode === 127) throw new CliError(r.stderr.trim().split('\n').pop() || 'docker was not found on the NAS');
    return r.exitCode === 0 ? r.stdout.trim() : undefined;
  };
  // Also proves the connection (with retries) before a stream that cannot be replayed.
  if ((await remoteId()) === id) return { image: name, id, action: 'skipped', bytes: 0 };

  const save = spawn(docker, ['save', image], { stdio: ['ignore', 'pipe', 'pipe'] });
  let saveErr = '';
  save.stderr.setEncoding('utf8').on('data', (d: string) => (saveErr += d));
  const saved = new Promise<number>((r) => {
    save.on('error', () => r(127));
    save.on('close', (code) => r(code ?? 1));
  });
  let bytes = 0;
  const counter = new PassThrough();
  counter.on('data', (chunk: Buffer) => (bytes += chunk.length));
  save.stdout.pipe(counter);
  let loadOut = '';
  let loadErr = '';
  const sink = (append: (s: string) => void) => new PassThrough().on('data', (d: Buffer) => append(d.toString('utf8')));
  const loaded = await ssh
    .stream(remoteDocker(['load']), {
      stdin: counter,
      stdout: sink((s) => (loadOut += s)),
      stderr: sink((s) => (loadErr += s)),
    })
    .catch((error: unknown) => {
      save.kill();
      throw error;
    });
  // If the NAS stopped reading, docker save gets EPIPE and ends; make sure it is not left running.
  if (save.exitCode === null) save.kill();
  const saveCode = await saved;
  if (saveCode !== 0 && loaded === 0)
    throw new CliError(`docker save ${image} failed here (exit ${saveCode}): ${saveErr.trim()}`);
  if (loaded !== 0) {
    throw new CliError(
      `docker load of '${image}' failed on the NAS (exit ${loaded}): ${(loadErr || loadOut).trim().split('\n').slice(-3).join(' ')}`,
      {
        advice:
          saveCode !== 0
            ? `docker save also failed here: ${saveErr.trim()}`
            : 'Check the free space of the NAS volume that holds Docker data.',
      },
    );
  }
  if (name !== image) await ssh.check(remoteDocker(['tag', image, name]), `docker tag ${image} ${name}`);
  const after = await remoteId();
  if (after !== id) throw new CliError(`after docker load the NAS's '${name}' is ${after ?? 'missing'}, not ${id}`);
  return { image: name, id, action: 'shipped', bytes };
}
