// Loads the AWS SDK only when off-site is used. Inside the executable the SDK is not part of the
// main bundle (V8 reads and checks the code cache of the whole main file at every start, which
// the SDK's size made slow) but a second bundle stored as a SEA asset, compiled here on first use.
// From source (tsx, the tests) it is a plain dynamic import.
import { compileFunction } from 'node:vm';

/** What lib/offsite/sdk-entry.ts exports: the S3 client, the commands the off-site copy sends. */
export type Sdk = typeof import('./sdk-entry.ts');

/** The asset's key in the executable: defined by the build (build/sdk.mjs), which stores the SDK bundle under it. */
declare const __PLANETARION_SDK_ASSET__: string;

let loaded: Promise<Sdk> | undefined;

/** The SDK, loaded once per process. */
export function loadSdk(): Promise<Sdk> {
  loaded ??= load();
  return loaded;
}

async function load(): Promise<Sdk> {
  // getBuiltinModule, not import(): a dynamic import fails inside a SEA built with a code cache.
  const sea = process.getBuiltinModule('node:sea');
  if (sea.isSea()) return evaluate(sea.getAsset(__PLANETARION_SDK_ASSET__, 'utf8'));
  // The main bundle leaves this import out (build/sdk.mjs), so it holds no SDK code.
  return import('./sdk-entry.ts');
}

/**
 * Runs the SDK bundle as a CommonJS module. Its only requires are Node's built-in modules (the
 * build bundles everything else and checks that), served by getBuiltinModule: inside a SEA,
 * `require` cannot load anything else anyway.
 */
function evaluate(code: string): Sdk {
  const module = { exports: {} as Sdk };
  const require = (id: string): unknown => {
    const builtin = process.getBuiltinModule(id);
    if (builtin === undefined) throw new Error(`the SDK bundle requires '${id}', which is not a Node built-in module`);
    return builtin;
  };
  const init = compileFunction(code, ['exports', 'require', 'module'], { filename: __PLANETARION_SDK_ASSET__ });
  init(module.exports, require, module);
  return module.exports;
}
