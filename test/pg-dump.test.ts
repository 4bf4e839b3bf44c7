// The dump's exec (dump/pg-dump.ts): values reach sh as arguments, and the side query's answer
// comes back on stderr apart from pg_dump's own messages.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
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
 * `slowPsql`: the side query's psql takes 1 s and records its end too.
 */
function runScript(stdin: string | null, options: { isReady?: boolean; slowPsql?: boolean } = {}) {
  const bin = mkdtempSync(join(tmpdir(), 'pb-dump-script-'));
  try {
    const record = (name: string, status = 0, body = '') => {
      writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> "${bin}/calls"\n${body}exit ${status}\n`);
      chmodSync(join(bin, name), 0o755);
    };
    record('pg_isready', options.isReady === false ? 2 : 0);
    record(
      'psql',
      0,
      options.slowPsql ? `sleep 1\necho "psql done" >> "${bin}/calls"\necho '{"encoding": "UTF8"}'\n` : '',
    );
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
    return { status: r.status, calls, stderr: r.stderr };
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
}

const programs = (calls: string[]) => calls.map((c) => c.split(' ')[0]);

dump('the go line names the snapshot: pg_isready first, then pg_dump imports it; the side query ran too', () => {
  const r = runScript('00000003-0000001B-1\n');
  assert.is(r.status, 0);
  assert.is(r.calls.length, 3);
  assert.match(r.calls[0]!, /^pg_isready -U u -d d$/);
  assert.ok(
    r.calls.some((c) => /^psql .* -c SELECT 1$/.test(c)),
    r.calls.join('\n'),
  );
  assert.ok(
    r.calls.includes(
      'pg_dump --no-password --lock-wait-timeout=300s -U u -d d --compress=1 --snapshot=00000003-0000001B-1',
    ),
    r.calls.join('\n'),
  );
});

dump('an empty go line: pg_dump runs without a snapshot', () => {
  const r = runScript('\n');
  assert.is(r.status, 0);
  assert.ok(
    r.calls.includes('pg_dump --no-password --lock-wait-timeout=300s -U u -d d --compress=1'),
    r.calls.join('\n'),
  );
});

dump('the side query runs beside pg_dump, and the exec waits for its answer before it ends', async () => {
  // spawnSync would wait for the background psql's copy of stderr anyway; docker exec does not.
  const exitedAfter = await new Promise<number>((resolve) => {
    const bin = mkdtempSync(join(tmpdir(), 'pb-dump-script-'));
    for (const [name, body] of [
      ['pg_isready', ''],
      ['psql', 'sleep 1\n'],
      ['pg_dump', ''],
    ] as const) {
      writeFileSync(join(bin, name), `#!/bin/sh\n${body}exit 0\n`);
      chmodSync(join(bin, name), 0o755);
    }
    const argv = dumpCommand({ user: 'u', database: 'd', format: 'gzip', sideQuery: 'SELECT 1' });
    const started = Date.now();
    const child = spawn(argv[0]!, argv.slice(1), {
      env: { PATH: `${bin}:/usr/bin:/bin` },
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.stdin.end('\n');
    child.on('exit', () => {
      rmSync(bin, { recursive: true, force: true });
      resolve(Date.now() - started);
    });
  });
  assert.ok(exitedAfter >= 900, `the script exited ${exitedAfter} ms in, before the side query's psql`);
  const r = runScript('\n', { slowPsql: true });
  assert.is(r.status, 0);
  // pg_dump ran while psql still slept; which of the two started first is up to the scheduler.
  assert.is(r.calls[0]!.split(' ')[0], 'pg_isready');
  assert.is(r.calls[3], 'psql done');
  assert.equal([...programs(r.calls.slice(1, 3))].sort(), ['pg_dump', 'psql']);
  assert.equal(splitSideAnswer(r.stderr).side, { answer: '{"encoding": "UTF8"}' });
});

dump('no go line (a check failed, or the tool went away): exit 97 and pg_dump never runs', () => {
  const r = runScript(null, { slowPsql: true });
  assert.is(r.status, 97);
  assert.equal(programs(r.calls), ['pg_isready', 'psql', 'psql']);
});

dump('pg_isready failing: exit 96 before the go line is read, nothing else runs', () => {
  const r = runScript('\n', { isReady: false });
  assert.is(r.status, 96);
  assert.equal(programs(r.calls), ['pg_isready']);
});

dump.run();
