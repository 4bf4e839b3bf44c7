import { $ as zx$, type Options } from 'zx/core';

/** The command runner every lib function takes as a parameter (zx's `$`), so tests can pass their own. */
export type Shell = typeof zx$;

/**
 * POSIX single-quote quoting. zx's default emits bash's `$'...'`, which QNAP's busybox `sh`
 * does not understand; single quotes mean the same thing in every POSIX shell.
 */
export function quotePosix(value: unknown): string {
  const text = String(value);
  if (text === '') return "''";
  if (/^[\w@%+=:,./-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** Options shared by every shell we start: /bin/sh (no bash on the NAS), POSIX quoting, quiet. */
export const shellDefaults: Partial<Options> = {
  shell: '/bin/sh',
  prefix: 'set -e; ',
  postfix: '',
  quote: quotePosix,
  verbose: false,
  quiet: true,
};

/** A `$` for /bin/sh with POSIX quoting, plus any per-call options (cwd, env, timeout...). */
export function createShell(options: Partial<Options> = {}): Shell {
  return zx$({ ...shellDefaults, ...options }) as unknown as Shell;
}
