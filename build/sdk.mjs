// Step 1b: the AWS SDK in a bundle of its own, stored in each executable as a SEA asset. Only
// off-site copies use the SDK, yet it is half of what the main bundle would be, and V8 reads and
// checks the code cache of the whole main file at every start. lib/offsite/sdk.ts compiles the
// asset on first use; the main bundle gets the asset's key instead of the SDK (sdkPlugin).
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { build } from 'esbuild';
import { nodeVersion, root } from './targets.mjs';

/** The asset's key in the SEA blob, and the bundle's file name in the work folder and dist/. */
export const sdkAsset = 'aws-sdk.cjs';

/** The packages that must be in the SDK bundle only. */
const sdkPackages = /^@(aws-sdk|aws-crypto|smithy|aws)\//;

const entry = join(root, 'lib/offsite/sdk-entry.ts');

/**
 * Bundles lib/offsite/sdk-entry.ts (what the off-site client uses) into `outfile`: CommonJS, every
 * dependency inside, so its only requires are Node's built-in modules, the one thing a SEA can
 * require. Minified (its stack traces are the SDK's, not ours; keepNames keeps the error classes'
 * names the client matches on).
 */
export async function bundleSdk(outfile) {
  const result = await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: `node${nodeVersion.split('.')[0]}`,
    // The SDK's few `import()` calls become require(): compiled from an asset, the module has no
    // dynamic import callback, and a real import() would throw.
    supported: { 'dynamic-import': false },
    minify: true,
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
  });
  const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
  const foreign = Object.values(result.metafile.outputs)
    .flatMap((o) => o.imports.map((i) => i.path))
    .filter((path) => !builtins.has(path));
  if (foreign.length) throw new Error(`the SDK bundle requires modules it does not contain: ${foreign.join(', ')}`);
}

/**
 * For the main bundle: lib/offsite/sdk.ts's import of the entry is left to run time (from source
 * it is the TypeScript module; the bundle never reaches it inside a SEA, where the asset is used),
 * and any other import of an SDK package stops the build.
 */
export const sdkPlugin = {
  name: 'sdk-asset',
  setup(b) {
    b.onResolve({ filter: /\/sdk-entry\.ts$/ }, () => ({ path: `./${sdkAsset}`, external: true }));
    b.onResolve({ filter: sdkPackages }, (args) => ({
      errors: [{ text: `${args.path} belongs in the SDK bundle: import it through lib/offsite/sdk.ts` }],
    }));
  },
};
