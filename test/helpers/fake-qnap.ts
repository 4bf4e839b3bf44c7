// A fake QNAP system tree for --root: etc/config/crontab, an etc/init.d/crond.sh that records its
// calls, and a recording `crontab` command to put first on PATH (loading a file, stdin, -l).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir } from './tmp.ts';

export interface FakeQnapRoot {
  /** The temp dir holding everything (remove it when done). */
  base: string;
  /** Stands for / (--root). */
  root: string;
  /** Folder to put first on PATH: the recording `crontab`. */
  bin: string;
  /** <root>/etc/config/crontab */
  crontab: string;
  /** Lines appended by the fake crontab and crond.sh, in call order. */
  calls(): string[];
}

/** Lays out a fake QNAP root whose crontab holds `crontabText`. */
export function makeFakeQnapRoot(crontabText: string): FakeQnapRoot {
  const base = makeTempDir('planetarion-qnap-');
  const root = join(base, 'root');
  const bin = join(base, 'bin');
  const record = join(base, 'calls');
  const spool = join(base, 'spool');
  for (const dir of ['etc/config', 'etc/init.d']) mkdirSync(join(root, dir), { recursive: true });
  mkdirSync(bin);
  const crontab = join(root, 'etc/config/crontab');
  writeFileSync(crontab, crontabText, { mode: 0o644 });
  writeFileSync(join(root, 'etc/init.d/crond.sh'), `#!/bin/sh\necho "crond.sh $@" >> '${record}'\n`, { mode: 0o755 });
  // Like the real one: `crontab FILE` loads a file, `crontab -` stdin, `crontab -l` prints what is loaded.
  writeFileSync(
    join(bin, 'crontab'),
    `#!/bin/sh
echo "crontab $@" >> '${record}'
case "$1" in
  -l) cat '${spool}' 2>/dev/null || { echo "no crontab for root" >&2; exit 1; } ;;
  -) cat > '${spool}' ;;
  *) cp "$1" '${spool}' ;;
esac
`,
    { mode: 0o755 },
  );
  return {
    base,
    root,
    bin,
    crontab,
    calls: () => (existsSync(record) ? readFileSync(record, 'utf8').split('\n').filter(Boolean) : []),
  };
}
