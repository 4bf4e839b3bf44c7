// Step 1: esbuild bundles scripts/cli.ts into one CommonJS file, and the bundle names its launchers.
import { build } from 'esbuild';
import { join } from 'node:path';
import { exeName, nodeVersion, pkg, root } from './targets.mjs';
import { execFile } from './files.mjs';
import { sdkAsset, sdkPlugin } from './sdk.mjs';

/** Bundles scripts/cli.ts (the one entry; it dispatches on the name it is invoked by) into `outfile`. */
export async function bundle(outfile) {
  await build({
    entryPoints: [join(root, 'scripts/cli.ts')],
    outfile,
    bundle: true,
    // SEA runs CommonJS only (no ESM, no top-level await). In CommonJS output esbuild turns each
    // `import()` of a bundled module into a lazily evaluated part of this file: a real dynamic
    // import would fail inside a SEA with a code cache (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING).
    format: 'cjs',
    platform: 'node',
    target: `node${nodeVersion.split('.')[0]}`,
    // No minification: the executable is ~110 MB of Node either way, and readable stack traces
    // (runMain prints them for bugs) are worth more than a few hundred KB. The module names esbuild
    // gives each lazily evaluated part are what test/build.e2e.test.ts checks laziness by.
    minify: false,
    keepNames: true,
    // Module names as the checkout shows them (node_modules/...), not the real path a symlinked
    // node_modules leads to: the bundle, so the executable, does not depend on where the packages lie.
    preserveSymlinks: true,
    legalComments: 'none',
    logLevel: 'warning',
    // The AWS SDK is a bundle of its own, an asset of the executable (build/sdk.mjs).
    plugins: [sdkPlugin],
    define: {
      // lib/version.ts reads this; from source it reads package.json instead.
      __PLANETARION_VERSION__: JSON.stringify(pkg.version),
      // lib/offsite/sdk.ts loads the SDK bundle from the executable's asset of this key.
      __PLANETARION_SDK_ASSET__: JSON.stringify(sdkAsset),
      // import.meta is empty in CommonJS output; give it a real file URL. Inside the SEA,
      // __filename is process.execPath (the loader, when started through the launcher), so this
      // must never be used to find files next to the executable.
      'import.meta.url': '__planetarion_import_meta_url',
    },
    banner: { js: `const __planetarion_import_meta_url = require('node:url').pathToFileURL(__filename).href;` },
  });
}

/**
 * Launcher names: `planetarion` plus every command that gets its own name on the NAS, as printed
 * by the bundle's hidden `--list-launchers` flag (one per line). The list lives in one place,
 * scripts/cli.ts; the fresh bundle is asked, run by the embedded Node.
 */
export async function listLauncherNames(target, node, bundlePath) {
  const [command, ...args] = target.runNode(node);
  const { stdout } = await execFile(command, [...args, bundlePath, '--list-launchers'], {
    env: { ...process.env, NO_COLOR: '1' },
  });
  const names = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  for (const name of names)
    if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`bad command name from the bundle: ${JSON.stringify(name)}`);
  if (names[0] !== exeName || names.length < 2)
    throw new Error(`the bundle listed no commands: ${JSON.stringify(names)}`);
  return names;
}
