// Step 4: what the build made: build-info.json (read by the tests and by the next build) and the
// lines printed for the person who ran it, with the time each step took.
import { writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { nodeVersion, pkg, sizeBudget } from './targets.mjs';

/** Runs labelled steps and keeps how long each took. */
export function stopwatch() {
  const start = performance.now();
  const timings = [];
  return {
    async timed(label, fn) {
      const stepStart = performance.now();
      try {
        return await fn();
      } finally {
        timings.push([label, (performance.now() - stepStart) / 1000]);
      }
    },
    summary: () => [
      `  timings: ${timings.map(([label, s]) => `${label} ${s.toFixed(1)}s`).join(', ')}`,
      `  total ${((performance.now() - start) / 1000).toFixed(1)}s`,
    ],
  };
}

/** Writes <work>/build-info.json describing the folders of this build. */
export async function writeBuildInfo(work, launcherNames, reports) {
  const buildInfo = {
    version: pkg.version,
    node: `v${nodeVersion}`,
    commands: launcherNames,
    sizeBudget,
    targets: Object.fromEntries(reports.map(({ kept, ...r }) => [r.arch, r])),
  };
  await writeFile(join(work, 'build-info.json'), `${JSON.stringify(buildInfo, null, 2)}\n`);
}

const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

/** The summary lines: version, commands, each folder's size against the budget, the timings. */
export function summaryLines({ dist, launcherNames, reports, clock }) {
  const shownDist = relative(process.cwd(), dist).startsWith('..') ? dist : relative(process.cwd(), dist);
  return [
    `planetarion-backup ${pkg.version}, node v${nodeVersion}, commands: ${launcherNames.join(' ')}`,
    ...reports.map(
      (r) =>
        `  ${join(shownDist, 'bin', `linux-${r.arch}`)}: ${mb(r.folderBytes)} (stripped node ${mb(r.strippedNodeBytes)}, ratio ${r.ratio.toFixed(3)}, budget ${sizeBudget})${r.kept ? ', up to date' : ''}`,
    ),
    ...clock.summary(),
  ];
}

/** The architectures whose folder is larger than the size budget allows. */
export function overBudget(reports) {
  return reports.filter((r) => r.ratio > sizeBudget).map((r) => r.arch);
}
