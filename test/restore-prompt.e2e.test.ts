// restore-database on a terminal without --yes: it shows the file, its age and size and the
// target, and asks; "n" changes nothing, "y" restores.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { quotePosix } from '../lib/host/shell.ts';
import { distBin, runTool } from './helpers/cli.ts';
import { psql, removeDb, scratchName, seedPlanetarion, startDb } from './helpers/db.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const db = scratchName('pb-prompt');
const dir = makeTempDir('planetarion-nas-');
let ready = false;

/** Runs restore-database latest on a pseudo-terminal (script(1)), typing `answer`. */
function onTerminal(answer: string): string {
  const command = `PLANETARION_DIR=${quotePosix(dir)} PLANETARION_DB_CONTAINER=${quotePosix(db)} ${quotePosix(join(distBin, 'restore-database'))} latest; echo "exit=$?"`;
  return execFileSync('sh', [
    '-c',
    `(sleep 2; printf '%s\\n' "$1") | script -qec "$2" /dev/null`,
    'sh',
    answer,
    command,
  ]).toString();
}

const prompt = suite('restore-database asks on a terminal');

prompt('setup: a seeded database and a backup of it', async () => {
  await startDb(db);
  await seedPlanetarion(db, { scale: 0.2 });
  const r = await runTool('backup-database', [], { PLANETARION_DIR: dir, PLANETARION_DB_CONTAINER: db });
  assert.is(r.code, 0, r.stderr);
  ready = true;
});

prompt('shows file, age, size and target; "n" cancels and changes nothing', async () => {
  assert.ok(ready, 'setup failed');
  await psql(db, "INSERT INTO chat_messages (channel, body, sent_at) VALUES ('#prompt', 'after backup', now())");
  const out = onTerminal('n');
  assert.match(
    out,
    /Restore .*planetarion_backup_\d{8}_\d{6}\.sql\.gz \(\d+(\.\d)? KB, \d+ s old\) into database 'planetarion' in container/,
  );
  assert.match(out, /Proceed\? \[y\/N\]/);
  assert.match(out, /restore cancelled; nothing was changed/);
  assert.match(out, /exit=1/);
  assert.is(await psql(db, "SELECT count(*) FROM chat_messages WHERE channel = '#prompt'"), '1');
});

prompt('"y" restores', async () => {
  assert.ok(ready, 'setup failed');
  const out = onTerminal('y');
  assert.match(out, /Restore completed/);
  assert.match(out, /exit=0/);
  assert.is(await psql(db, "SELECT count(*) FROM chat_messages WHERE channel = '#prompt'"), '0');
});

prompt.after(async () => {
  await removeDb(db);
  removeTempDir(dir);
});
prompt.run();
