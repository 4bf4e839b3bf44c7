import { readFileSync } from 'node:fs';

declare const __PLANETARION_VERSION__: string | undefined;

/** The tool's version: baked in by build.mjs, read from package.json when run from source. */
export const toolVersion: string =
  typeof __PLANETARION_VERSION__ === 'string'
    ? __PLANETARION_VERSION__
    : (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** What --version prints: the tool's version and the Node runtime it runs on (the embedded one, in the executable). */
export function versionLine(): string {
  return `planetarion-backup ${toolVersion} (node ${process.version}, ${process.platform}-${process.arch})`;
}
