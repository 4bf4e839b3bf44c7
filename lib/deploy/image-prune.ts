// The images a removed slot ran and no kept slot runs: every code change ships a new image tagged
// by its content, so without this the NAS's disk fills with one set per deployment. Only images
// this tool tagged (service-images.ts) go; the operator's own (postgres:15, ...) stay, since the
// NAS may not be able to pull them again. Docker refuses to remove an image a container uses.
import { existsSync } from 'node:fs';
import { readComposeFile } from '../host/compose.ts';
import type { Logger } from '../log.ts';
import type { Shell } from '../host/shell.ts';
import { isContentTag } from './service-images.ts';

/** The images a slot's compose file runs; none when the file is gone or unreadable. */
export function slotImages(file: string): string[] {
  if (!existsSync(file)) return [];
  try {
    return Object.values(readComposeFile(file).services)
      .map((service) => service.image)
      .filter((image): image is string => typeof image === 'string');
  } catch {
    return [];
  }
}

/** The content-tagged images of the removed slot that no kept slot runs. */
export function prunableImages(removed: string[], kept: string[]): string[] {
  return [...new Set(removed)].filter((image) => isContentTag(image) && !kept.includes(image));
}

/** Removes those images; one that is still used (or gone) is left, and only noted. */
export async function pruneImages($: Shell, docker: string, images: string[], log: Logger): Promise<void> {
  const removed: string[] = [];
  for (const image of images) {
    const out = await $({ nothrow: true, timeout: '120s' })`${docker} image rm ${image}`;
    if (out.exitCode === 0) removed.push(image);
    else log.info(`Kept image ${image}: ${out.stderr.trim().split('\n')[0]}`);
  }
  if (removed.length) log.info(`Removed the images no slot runs any more: ${removed.join(', ')}`);
}
