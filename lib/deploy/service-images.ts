// --service-images, how the workstation tells the NAS-side run which image each service with
// `build:` runs (`service=tag,...`): written by remote/run.ts, read here on the NAS.
import { UsageError } from '../errors.ts';

/** The tag of an image built for the NAS, named by its content: `<repo>:c<16 hex digits>`. */
export const contentTag = (repo: string, hash: string) => `${repo}:c${hash}`;

/** Whether an image name is such a content tag (an image this tool built, which it may remove once unused). */
export const isContentTag = (image: string) => /^[a-z0-9][a-z0-9_./-]*:c[0-9a-f]{16}$/.test(image);

/** Parses --service-images (`service=image,...`); a UsageError for anything else. */
export function parseServiceImages(raw: string | undefined): Record<string, string> {
  const images: Record<string, string> = {};
  for (const pair of (raw ?? '').split(',').filter(Boolean)) {
    const match = /^([A-Za-z0-9_.-]+)=([a-z0-9][a-z0-9_./:-]*)$/.exec(pair.trim());
    if (!match)
      throw new UsageError(
        `invalid --service-images entry '${pair}': SERVICE=IMAGE (what deploy-to-qnap on the workstation passes)`,
      );
    images[match[1]!] = match[2]!;
  }
  return images;
}
