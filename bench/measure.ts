// Measuring commands for the benchmarks: wall time and peak RSS (VmHWM sampled from /proc).
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { cleanEnv } from '../test/helpers/cli.ts';

export interface Sample {
  seconds: number;
  peakRssMb: number;
}

/** Runs a command to its end, timing it and sampling its peak RSS (VmHWM) from /proc. */
export function measure(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; stdoutFile?: string; stdinFile?: string } = {},
): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const out = options.stdoutFile ? openSync(options.stdoutFile, 'w') : 'ignore';
    const input = options.stdinFile ? openSync(options.stdinFile, 'r') : 'ignore';
    const started = performance.now();
    const child = spawn(command, args, { env: options.env ?? process.env, stdio: [input, out, 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    let peak = 0;
    const sample = () => {
      try {
        const kb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0);
        peak = Math.max(peak, kb);
      } catch {
        // exited
      }
    };
    const timer = setInterval(sample, 20);
    child.on('close', (code) => {
      clearInterval(timer);
      if (typeof out === 'number') closeSync(out);
      if (typeof input === 'number') closeSync(input);
      const seconds = (performance.now() - started) / 1000;
      if (code !== 0) reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${stderr}`));
      else resolve({ seconds, peakRssMb: peak / 1024 });
    });
  });
}

export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/**
 * The environment the benchmarked executables get: the tests' clean one without
 * NODE_EXTRA_CA_CERTS, which this machine sets and Node reads at every start (the NAS does not).
 */
export function benchEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env = cleanEnv(extra);
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

/** Fills the bench database with pgbench's tables at `scale` (about 15 MB of data per unit). */
export function pgbenchInit(db: string, scale: number): Promise<Sample> {
  return measure('docker', [
    'exec',
    db,
    'pgbench',
    '-i',
    '-q',
    '-s',
    String(scale),
    '-U',
    'planetarion_user',
    'planetarion',
  ]);
}
