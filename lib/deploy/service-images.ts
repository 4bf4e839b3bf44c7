// --service-images, how the workstation tells the NAS-side run which image each service with
// `build:` runs (`service=tag,...`): written by remote/run.ts, read here on the NAS.
import { UsageError } from '../errors.ts';

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
