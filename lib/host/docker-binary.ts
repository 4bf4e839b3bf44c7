// Finding docker: cron on QNAP runs with a PATH that lacks Container Station's bin folder,
// so after PATH we look where Container Station installs it.
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { UsageError } from '../errors.ts';

export interface DockerSearch {
  /** DOCKER / --docker, when set. */
  explicit?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Filesystem root, for tests that lay out a fake QNAP tree. */
  root?: string;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The Install_Path of a section of QNAP's /etc/config/qpkg.conf (INI), if any. */
export function qpkgInstallPath(qpkgConf: string, section: string): string | undefined {
  let current = '';
  for (const line of qpkgConf.split(/\r?\n/)) {
    const header = /^\s*\[(.+)\]\s*$/.exec(line);
    if (header) current = header[1]!.trim().toLowerCase();
    else if (current === section.toLowerCase()) {
      const kv = /^\s*Install_Path\s*=\s*(.+?)\s*$/i.exec(line);
      if (kv) return kv[1];
    }
  }
  return undefined;
}

/** `name` in every folder of PATH, in order (whether it exists or not). */
export function pathCandidates(name: string, env: NodeJS.ProcessEnv): string[] {
  return (env.PATH ?? '')
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, name));
}

/** Every place docker may be, in the order they are tried. */
export function dockerCandidates(search: DockerSearch = {}): string[] {
  const env = search.env ?? process.env;
  const root = search.root ?? '/';
  const candidates = pathCandidates('docker', env);
  try {
    const installPath = qpkgInstallPath(readFileSync(join(root, 'etc/config/qpkg.conf'), 'utf8'), 'container-station');
    if (installPath) candidates.push(join(root, installPath, 'bin/docker'));
  } catch {
    // not QNAP, or no Container Station entry
  }
  try {
    for (const share of readdirSync(join(root, 'share')).sort()) {
      candidates.push(join(root, 'share', share, '.qpkg/container-station/bin/docker'));
    }
  } catch {
    // no /share
  }
  candidates.push(join(root, 'usr/local/bin/docker'), join(root, 'usr/bin/docker'));
  return [...new Set(candidates)];
}

/** The docker binary to use; a usage error (exit 2) naming what was tried when there is none. */
export function locateDocker(search: DockerSearch = {}): string {
  if (search.explicit) {
    if (isExecutable(search.explicit)) return search.explicit;
    throw new UsageError(
      `DOCKER '${search.explicit}' is not an executable file`,
      'Point DOCKER (or --docker) at the docker binary, or unset it to search for one.',
    );
  }
  const candidates = dockerCandidates(search);
  const found = candidates.find(isExecutable);
  if (found) return found;
  throw new UsageError(
    "docker was not found on PATH nor in Container Station's folder",
    `Tried: ${candidates.join(', ')}. Install or start Container Station, or set DOCKER=/path/to/docker.`,
  );
}
