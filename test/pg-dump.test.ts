// The dump's exec (dump/pg-dump.ts): values reach sh as arguments, and the side query's answer
// comes back on stderr apart from pg_dump's own messages.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dumpCommand, splitSideAnswer } from '../lib/dump/pg-dump.ts';

const dump = suite('pg_dump exec');

dump('the user, database and side query are arguments of sh, never script text', () => {
  const query = 'SELECT \'x\'; $(rm -rf /) `id` "quoted"';
  const argv = dumpCommand({ user: 'u"1', database: "d'b", format: 'gzip', sideQuery: query });
  assert.is(argv[0], 'sh');
  const script = argv[2]!;
  for (const value of ['u"1', "d'b", query]) assert.not.ok(script.includes(value), value);
  assert.equal(argv.slice(3, 7), ['sh', 'u"1', "d'b", query]);
  assert.equal(argv.slice(7, 9), ['pg_dump', '--no-password']);
});

dump('without a side query the third argument is empty (the script skips psql)', () => {
  const argv = dumpCommand({ user: 'u', database: 'd', format: 'plain' });
  assert.is(argv[6], '');
});

dump("the side answer is taken out of stderr; pg_dump's messages stay", () => {
  const { side, rest } = splitSideAnswer(
    'planetarion-side-answer: {"encoding": "UTF8"}\npg_dump: warning: something\n',
  );
  assert.equal(side, { answer: '{"encoding": "UTF8"}' });
  assert.is(rest, 'pg_dump: warning: something\n');
});

dump("psql's error for the side query comes back as an error, not an answer", () => {
  const { side, rest } = splitSideAnswer('planetarion-side-error: psql: error: permission denied \n');
  assert.equal(side, { error: 'psql: error: permission denied' });
  assert.is(rest, '');
});

dump('no side query: no side, stderr unchanged', () => {
  assert.equal(splitSideAnswer('pg_isready: no response\n'), { side: undefined, rest: 'pg_isready: no response\n' });
});

/**
 * Runs the dump's script under the host's sh, with stand-ins for the PostgreSQL programs that
 * record how they were called: what is tested is the script's order and its go line, not pg_dump.
 */
function runScript(stdin: string | null, isReady = true) {
  const bin = mkdtempSync(join(tmpdir(), 'pb-dump-script-'));
  try {
    const record = (name: string, status = 0) => {
      writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> "${bin}/calls"\nexit ${status}\n`);
      chmodSync(join(bin, name), 0o755);
    };
    record('pg_isready', isReady ? 0 : 2);
    record('psql');
    record('pg_dump');
    const argv = dumpCommand({ user: 'u', database: 'd', format: 'gzip', sideQuery: 'SELECT 1' });
    const r = spawnSync(argv[0]!, argv.slice(1), {
      input: stdin ?? '',
      env: { PATH: `${bin}:/usr/bin:/bin` },
      encoding: 'utf8',
    });
    let calls: string[] = [];
    try {
      calls = readFileSync(join(bin, 'calls'), 'utf8').trim().split('\n');
    } catch {}
    return { status: r.status, calls };
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
}

dump('the go line names the snapshot: pg_dump runs after pg_isready and the side query, and imports it', () => {
  const r = runScript('00000003-0000001B-1\n');
  assert.is(r.status, 0);
  assert.is(r.calls.length, 3);
  assert.match(r.calls[0]!, /^pg_isready -U u -d d$/);
  assert.match(r.calls[1]!, /^psql .* -c SELECT 1$/);
  assert.is(
    r.calls[2],
    'pg_dump --no-password --lock-wait-timeout=300s -U u -d d --compress=1 --snapshot=00000003-0000001B-1',
  );
});

dump('an empty go line: pg_dump runs without a snapshot', () => {
  const r = runScript('\n');
  assert.is(r.status, 0);
  assert.is(r.calls[2], 'pg_dump --no-password --lock-wait-timeout=300s -U u -d d --compress=1');
});

dump('no go line (a check failed, or the tool went away): exit 97 and pg_dump never runs', () => {
  const r = runScript(null);
  assert.is(r.status, 97);
  assert.equal(
    r.calls.map((c) => c.split(' ')[0]),
    ['pg_isready', 'psql'],
  );
});

dump('pg_isready failing: exit 96 before the go line is read, nothing else runs', () => {
  const r = runScript('\n', false);
  assert.is(r.status, 96);
  assert.equal(
    r.calls.map((c) => c.split(' ')[0]),
    ['pg_isready'],
  );
});

dump.run();
