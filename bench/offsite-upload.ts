// Uploads one backup (with its sidecars, confirmed) through the tool's own off-site code, so
// bench/offsite.bench.ts can time the upload alone against `aws s3 cp` of the same file.
// Usage: tsx bench/offsite-upload.ts FILE s3://BUCKET/PREFIX ENDPOINT   (credentials in the environment)
import { resolveSettings } from '../lib/settings.ts';
import { OffsiteStore } from '../lib/offsite/client.ts';
import { offsiteConfig } from '../lib/offsite/config.ts';
import { localFacts, uploadBackup } from '../lib/offsite/upload.ts';

const [file, url, endpoint] = process.argv.slice(2);
const settings = resolveSettings({
  flags: { 'offsite-url': url, 's3-endpoint': endpoint, dir: '/' },
  readFile: () => undefined,
});
const store = await OffsiteStore.open(offsiteConfig(settings)!);
try {
  // A read-back would time a download as well: the comparison holds only for an ETag confirmation.
  const { confirmedBy } = await uploadBackup(store, localFacts(file!)!);
  if (confirmedBy !== 'etag') throw new Error(`the upload was confirmed by ${confirmedBy}, not by its ETag`);
} finally {
  store.close();
}
