// Runs the built executables (dist/bin/linux-x64) the way cron and operators do.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

/** The folder of the linux-x64 executables, built by `npm run build`. */
export const distBin = join(import.meta.dirname, '../../dist/bin/linux-x64');

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment a test run gets: the caller's, minus any PLANETARION_* setting of the developer. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PLANETARION_') && key !== 'DOCKER' && key !== 'FORCE_COLOR') env[key] = value;
  }
  return { ...env, ...extra };
}

export interface StartedTool {
  child: ChildProcess;
  done: Promise<ToolResult>;
}

export interface StartOptions {
  cwd?: string;
  /** In a process group of its own, so a test can signal it with everything it started. */
  detached?: boolean;
}

/** Starts any program with its output collected; `done` resolves when it closes, whatever its exit. */
export function startProcess(
  file: string,
  args: string[],
  options: StartOptions & { env?: NodeJS.ProcessEnv } = {},
): StartedTool {
  const child = spawn(file, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<ToolResult>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

/** Starts a command (backup-database, ...) of the built executable. */
export function startTool(
  command: string,
  args: string[],
  env: Record<string, string | undefined> = {},
  options: StartOptions = {},
): StartedTool {
  return startProcess(join(distBin, command), args, { ...options, env: cleanEnv(env) });
}

/** Runs a command of the built executable to its end. */
export function runTool(
  command: string,
  args: string[],
  env: Record<string, string | undefined> = {},
  options: { cwd?: string } = {},
): Promise<ToolResult> {
  return startTool(command, args, env, options).done;
}

/** Polls until `check` holds (or throws after timeoutMs). */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  everyMs = 50,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
