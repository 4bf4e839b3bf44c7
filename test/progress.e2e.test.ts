// Progress output: on a terminal the backup shows bytes dumped and the rate; without one (cron)
// only plain timestamped lines, so logs stay readable.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { distBin, runTool } from './helpers/cli.ts';
import { removeDb, scratchName, seedPlanetarion, startDb } from './helpers/db.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';
import { quotePosix } from '../lib/host/shell.ts';

const db = scratchName('pb-progress');
const dirs: string[] = [];
let ready = false;

const progress = suite('progress output');

progress('setup: a seeded database', async () => {
  await startDb(db);
  await seedPlanetarion(db, { scale: 1 });
  ready = true;
});

progress('on a terminal: bytes dumped and the rate, then the timestamped lines', () => {
  assert.ok(ready, 'setup failed');
  const dir = makeTempDir('planetarion-nas-');
  dirs.push(dir);
  // script(1) gives the command a real pseudo-terminal.
  const command = `PLANETARION_DIR=${quotePosix(dir)} PLANETARION_DB_CONTAINER=${quotePosix(db)} ${quotePosix(join(distBin, 'backup-database'))}`;
  const out = execFileSync('script', ['-qec', command, '/dev/null']).toString();
  assert.match(out, /\r {2}dumped \d+(\.\d)? (B|KB|MB) \(\d+(\.\d)? (B|KB|MB)\/s\)/);
  assert.match(out, /INFO - Backup completed successfully/);
});

progress('without a terminal: no progress line, no carriage returns, every line timestamped', async () => {
  assert.ok(ready, 'setup failed');
  const dir = makeTempDir('planetarion-nas-');
  dirs.push(dir);
  const r = await runTool('backup-database', [], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
  assert.is(r.code, 0, r.stderr);
  assert.not.match(r.stderr, /\r|dumped/);
  for (const line of r.stderr.trim().split('\n'))
    assert.match(line, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (INFO|WARN|ERROR) - /);
});

progress.after(async () => {
  await removeDb(db);
  for (const dir of dirs) removeTempDir(dir);
});
progress.run();
