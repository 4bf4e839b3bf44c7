// The build's command line and the tools it needs on this machine, checked before anything is written.
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BuildStop, root, targets } from './targets.mjs';

const usage = 'Usage: node build.mjs [--arch x64|arm64 ...] [--dist DIR]';

/** Which architectures, which dist folder. Bad usage stops the build with exit code 2. */
export function parseOptions(argv) {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { arch: { type: 'string', multiple: true }, dist: { type: 'string' } },
      strict: true,
    });
    const arches = (values.arch ?? targets.map((t) => t.arch)).flatMap((a) => a.split(','));
    const unknown = arches.find((a) => !targets.some((t) => t.arch === a));
    if (unknown) throw new Error(`unknown architecture '${unknown}' (known: ${targets.map((t) => t.arch).join(', ')})`);
    return { arches, dist: resolve(values.dist ?? join(root, 'dist')) };
  } catch (error) {
    throw new BuildStop(`${error.message.replace(/\. To specify a positional argument.*$/s, '')}. ${usage}`, 2);
  }
}

function onPath(name) {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The tools and the loader one architecture needs that this machine lacks. */
function missingFor(target) {
  return [
    ...[target.strip, 'readelf', target.runNode('node')[0]].filter((tool) => tool !== 'node' && !onPath(tool)),
    ...(target.libDirs.some((d) => existsSync(join(d, target.loader)))
      ? []
      : [`${target.loader} (in ${target.libDirs.join(' or ')})`]),
  ];
}

/**
 * Stops with one line naming what is missing and the command that installs it, before anything
 * is fetched or written (a fresh machine with only Node and npm has no cross tools).
 */
export function checkTools(chosen) {
  const missing = [...new Set(chosen.flatMap(missingFor))];
  if (missing.length === 0) return;
  const hostOnly =
    chosen.length > 1 && missingFor(targets[0]).length === 0
      ? `, or build for x64 only: npm run build -- --arch x64`
      : '';
  throw new BuildStop(
    `the build needs ${missing.join(', ')}: run 'bash test/env/setup.sh build' as root to install them${hostOnly}`,
    1,
  );
}
