// The dump's exec (dump/pg-dump.ts): values reach sh as arguments, and the side query's answer
// comes back on stderr apart from pg_dump's own messages.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dumpCommand, execDump, ExecStderr, execTag, snapshotHandoff } from '../lib/dump/pg-dump.ts';

const dump = suite('pg_dump exec');

/** The tag of the exec's own lines (execTag's shape). */
const tag = 'planetarion-0123456789abcdef-';

dump('the user, database and side query are arguments of sh, never script text', () => {
  const query = 'SELECT \'x\'; $(rm -rf /) `id` "quoted"';
  const argv = dumpCommand({ user: 'u"1', database: "d'b", format: 'gzip', sideQuery: query }, tag);
  assert.is(argv[0], 'sh');
  const script = argv[2]!;
  for (const value of ['u"1', "d'b", query, tag]) assert.not.ok(script.includes(value), value);
  assert.equal(argv.slice(3, 9), ['sh', 'u"1', "d'b", query, '', tag]);
  assert.equal(argv.slice(9, 11), ['pg_dump', '--no-password']);
});

dump("the tag of the exec's own lines is random: nothing in the database can forge one", () => {
  assert.match(execTag(), /^planetarion-[0-9a-f]{16}-$/);
  assert.is.not(execTag(), execTag());
});

dump('without a side query the third argument is empty (the script skips psql); a session sets the fourth', () => {
  const argv = dumpCommand({ user: 'u', database: 'd', format: 'plain' }, tag);
  assert.is(argv[6], '');
  assert.is(argv[7], '');
  assert.is(dumpCommand({ user: 'u', database: 'd', format: 'plain', session: true }, tag)[7], '1');
});

dump(
  "the session's handoff: psql writes the exported snapshot into the script's pipe; anything else is refused",
  () => {
    assert.is(snapshotHandoff('00000003-0000001B-1'), "SELECT '00000003-0000001B-1' \\g :planetarion_snapshot_pipe\n");
    for (const bad of ["x'; DROP TABLE t; --", '', '00000003'])
      assert.throws(() => snapshotHandoff(bad), /not a snapshot name/, bad);
  },
);

/** The exec's stderr fed in `pieces`; what each target got. */
function readExecStderr(pieces: string[]) {
  const got = {
    output: [] as string[],
    messages: [] as string[],
    ended: [] as (number | null)[],
    dumpExit: [] as number[],
  };
  const stderr = new ExecStderr(tag, {
    session: {
      output: (text) => got.output.push(text),
      messages: (text) => got.messages.push(text),
      ended: (code) => got.ended.push(code),
    },
    onDumpExit: (status) => got.dumpExit.push(status),
  });
  for (const piece of pieces) stderr.feed(piece);
  return { ...got, side: stderr.side, notReady: stderr.notReady, text: stderr.text() };
}

dump("the side answer is taken out of stderr, also when it comes in pieces; pg_dump's messages stay", () => {
  const r = readExecStderr([`${tag}side-ans`, 'wer: {"encoding": "UTF8"}\npg_dump: warning: some', 'thing\n']);
  assert.equal(r.side, { answer: '{"encoding": "UTF8"}' });
  assert.is(r.text, 'pg_dump: warning: something\n');
});

dump("psql's error for the side query comes back as an error, not an answer", () => {
  const r = readExecStderr([`${tag}side-error: psql: error: permission denied \n`]);
  assert.equal(r.side, { error: 'psql: error: permission denied' });
  assert.is(r.text, '');
});

dump('no side query: no side, stderr unchanged; an untagged or wrongly tagged line is only text', () => {
  const forged = 'planetarion-ffffffffffffffff-dump-exit: 0\n';
  const r = readExecStderr(['pg_isready: no response\n', forged]);
  assert.equal(r.side, undefined);
  assert.is(r.text, `pg_isready: no response\n${forged}`);
  assert.equal(r.dumpExit, []);
});

dump("psql killed mid-message: its exit status, joined to the message's end by the framer, is still read", () => {
  const r = readExecStderr([`${tag}psql-err: FATAL:  terminat${tag}psql-exit: 137\n`, `${tag}psql-end\n`]);
  assert.equal(r.messages, ['FATAL:  terminat\n']);
  assert.equal(r.ended, [137]);
});

dump("the session's lines go to the session, its exit status is read, not passed on as a message", () => {
  const r = readExecStderr([
    `${tag}psql-out: a\x1fb\n`,
    `${tag}psql-err: ERROR:  boom\n`,
    // psql's status goes through the same framer as its messages: after the tag twice.
    `${tag}psql-err: ${tag}psql-exit: 3\n`,
    `pg_dump: error: fragment ${tag}psql-end\n`,
    `${tag}dump-exit: 1\n`,
    `${tag}not-ready: /var/run/postgresql:5432 - no response\n`,
  ]);
  assert.equal(r.output, ['a\x1fb\n']);
  assert.equal(r.messages, ['ERROR:  boom\n']);
  assert.is(r.notReady, '/var/run/postgresql:5432 - no response');
  assert.equal(r.ended, [3]);
  assert.equal(r.dumpExit, [1]);
  assert.is(r.text, 'pg_dump: error: fragment ');
});

/**
 * Runs the dump's script under the host's sh, with stand-ins for the PostgreSQL programs that
 * record how they were called: what is tested is the script's order and its go line, not pg_dump.
 * `slowPsql`: the side query's psql takes 1 s and records its end too.
 */
function runScript(
  stdin: string | null,
  options: { isReady?: boolean; slowPsql?: boolean; dumpStatus?: number; shell?: string[] } = {},
) {
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
    record(
      'pg_dump',
      options.dumpStatus ?? 0,
      options.dumpStatus ? "echo 'pg_dump: error: connection failed' >&2\n" : '',
    );
    const argv = dumpCommand({ user: 'u', database: 'd', format: 'gzip', sideQuery: 'SELECT 1' }, tag);
    const [shell, ...shellArgs] = options.shell ?? [argv[0]!];
    const r = spawnSync(shell!, [...shellArgs, ...argv.slice(1)], {
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

dump('the go line names the snapshot: pg_dump imports it, the side query ran too, and pg_isready never runs', () => {
  const r = runScript('00000003-0000001B-1\n');
  assert.is(r.status, 0);
  assert.equal(programs(r.calls).sort(), ['pg_dump', 'psql']);
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
    const argv = dumpCommand({ user: 'u', database: 'd', format: 'gzip', sideQuery: 'SELECT 1' }, tag);
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
  assert.is(r.calls[2], 'psql done');
  assert.equal([...programs(r.calls.slice(0, 2))].sort(), ['pg_dump', 'psql']);
  assert.equal(readExecStderr([r.stderr]).side, { answer: '{"encoding": "UTF8"}' });
});

dump('no go line (a check failed, or the tool went away): exit 97 and pg_dump never runs', () => {
  const r = runScript(null, { slowPsql: true });
  assert.is(r.status, 97);
  assert.equal(programs(r.calls), ['psql', 'psql']);
});

// Alpine's postgres image runs the script under busybox ash (the test bed installs busybox-static).
for (const shell of [undefined, ['/bin/busybox', 'sh']]) {
  const under = shell ? ' (busybox ash)' : '';
  dump(`pg_dump failing where pg_isready fails too: exit 96, pg_isready's answer tagged after it${under}`, () => {
    const r = runScript('\n', { isReady: false, dumpStatus: 1, shell });
    assert.is(r.status, 96);
    assert.equal(programs(r.calls).sort(), ['pg_dump', 'pg_isready', 'psql']);
    // After pg_dump's failure; the side query's psql runs in the background, its place is the scheduler's.
    assert.ok(programs(r.calls).indexOf('pg_isready') > programs(r.calls).indexOf('pg_dump'), r.calls.join('\n'));
    assert.match(r.stderr, new RegExp(`${tag}dump-exit: 1`));
    assert.equal(readExecStderr([r.stderr]).notReady, '');
  });

  dump(`pg_dump failing while the server accepts connections: pg_dump's own status, no answer${under}`, () => {
    const r = runScript('\n', { dumpStatus: 2, shell });
    assert.is(r.status, 2);
    assert.equal(programs(r.calls).sort(), ['pg_dump', 'pg_isready', 'psql']);
    assert.is(readExecStderr([r.stderr]).notReady, undefined);
    assert.match(r.stderr, /pg_dump: error: connection failed/);
  });
}

dump.run();

/**
 * execDump with the session inside the exec, run on this host: a `docker` stand-in runs the exec's
 * command here, relaying its stdin and stderr, and stand-ins for psql and pg_dump record what they did in `calls`. The psql
 * stand-in answers `\echo` and plain lines as rows, writes the handoff's snapshot into the pipe
 * it is given, and fails on a line with FAIL; pg_dump takes `dumpSeconds`.
 */
function sessionBed(
  options: { dumpSeconds?: number; dumpStatus?: number; sideAnswer?: string; shell?: string[] } = {},
) {
  const { dumpSeconds = 0.3, dumpStatus = 0, sideAnswer = '{"encoding": "UTF8"}', shell = ['sh'] } = options;
  const bin = mkdtempSync(join(tmpdir(), 'pb-dump-session-'));
  const calls = join(bin, 'calls');
  const write = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  // Like docker exec, the stand-in relays stdin and stderr: killed, it closes them at once, and
  // what it started goes on until its stdin ends, as in a container.
  writeFileSync(
    join(bin, 'docker'),
    `#!${process.execPath}
const { spawn } = require('node:child_process');
const args = process.argv.slice(3);
let i = 0;
while (args[i] === '-i' || args[i] === '-e') i += args[i] === '-e' ? 2 : 1;
let [command, ...rest] = args.slice(i + 1);
if (command === 'sh') [command, ...rest] = [...${JSON.stringify(shell)}, ...rest];
// The exec's end, recorded by a shell of its own: this stand-in may be killed before it.
const recorded = '"$@"; s=$?; echo "exec end $s" >> "$0"; exit $s';
const child = spawn('/bin/sh', ['-c', recorded, ${JSON.stringify(calls)}, command, ...rest], { stdio: ['pipe', 'inherit', 'pipe'], env: { ...process.env, PATH: ${JSON.stringify(bin)} + ':' + process.env.PATH } });
child.stdin.on('error', () => {});
process.stdin.pipe(child.stdin);
child.stderr.pipe(process.stderr);
child.on('close', (code) => process.exit(code ?? 1));
`,
  );
  chmodSync(join(bin, 'docker'), 0o755);
  write('pg_isready', 'exit 0');
  write(
    'psql',
    [
      'for a in "$@"; do case "$a" in -c) side=1;; planetarion_snapshot_pipe=*) pipe=${a#planetarion_snapshot_pipe=};; esac; done',
      `if [ -n "$side" ]; then echo '${sideAnswer}'; exit 0; fi`,
      `echo "psql start" >> ${calls}`,
      'while IFS= read -r line; do',
      '  case "$line" in',
      `    *'\\g :planetarion_snapshot_pipe') snap=\${line#SELECT \\'}; snap=\${snap%%\\'*}; printf '%s\\n' "$snap" > "$pipe";;`,
      `    '\\echo '*) printf '%s\\n' "\${line#\\\\echo }";;`,
      `    '\\q') break;;`,
      `    *FAIL*) echo 'ERROR:  boom' >&2; echo "psql end 3" >> ${calls}; exit 3;;`,
      '    *SLEEP*) sleep 5;;',
      `    *) printf 'row\\037%s\\n' "$line";;`,
      '  esac',
      'done',
      `echo "psql end" >> ${calls}`,
    ].join('\n'),
  );
  write(
    'pg_dump',
    `echo "pg_dump $*" >> ${calls}\nsleep ${dumpSeconds}\nprintf -- '-- a dump\\n'\necho "pg_dump end" >> ${calls}\n${dumpStatus ? `echo 'pg_dump: error: permission denied for table t' >&2; exit ${dumpStatus}` : ''}`,
  );
  const exec = execDump({
    docker: join(bin, 'docker'),
    container: 'db',
    user: 'u',
    database: 'd',
    format: 'plain',
    path: join(bin, 'dump.sql'),
    session: true,
    sideQuery: 'SELECT 1',
  });
  const read = () => {
    try {
      return readFileSync(calls, 'utf8').trim().split('\n');
    } catch {
      return [];
    }
  };
  return { exec, calls: read, done: () => rmSync(bin, { recursive: true, force: true }) };
}

const inExec = suite('pg_dump exec with the session inside');

/** Waits until `check` holds, at most 3 s. */
async function eventually(check: () => boolean, what: string): Promise<void> {
  for (const started = Date.now(); !check(); await new Promise((resolve) => setTimeout(resolve, 50)))
    if (Date.now() - started > 3_000) assert.unreachable(what);
}

/** Fails the test if the bed's pg_dump stand-in was ever started. */
function assertNoPgDump(calls: string[]): void {
  assert.not.ok(
    calls.some((c) => c.startsWith('pg_dump')),
    calls.join('\n'),
  );
}

/** The message a promise rejects with; fails the test if it resolves. */
async function rejection(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => {
      assert.unreachable('it resolved');
      return '';
    },
    (error: Error) => error.message,
  );
}

inExec("the session's rows come back through the exec; pg_dump imports the snapshot it hands over", async () => {
  const bed = sessionBed();
  try {
    const session = bed.exec.session!;
    assert.equal(await session.query('SELECT 1'), [['row', 'SELECT 1;']]);
    bed.exec.open('00000003-0000001B-1');
    assert.equal(await session.query('SELECT 2'), [['row', 'SELECT 2;']]);
    await session.close();
    const result = await bed.exec.done;
    assert.is(result.bytes, '-- a dump\n'.length);
    assert.equal(result.side, { answer: '{"encoding": "UTF8"}' });
    assert.ok(
      bed.calls().includes('pg_dump --no-password --lock-wait-timeout=300s -U u -d d --snapshot=00000003-0000001B-1'),
      bed.calls().join('\n'),
    );
  } finally {
    bed.done();
  }
});

inExec(
  "a session closed before pg_dump is done stays open until it is: its transaction holds pg_dump's snapshot",
  async () => {
    const bed = sessionBed({ dumpSeconds: 0.5 });
    try {
      bed.exec.open('00000003-0000001B-1');
      await bed.exec.session!.close();
      await bed.exec.done;
      const order = bed
        .calls()
        .filter((c) => c !== 'psql start' && !c.startsWith('exec end'))
        .map((c) => c.split(' ').slice(0, 2).join(' '));
      assert.equal(order, ['pg_dump --no-password', 'pg_dump end', 'psql end']);
    } finally {
      bed.done();
    }
  },
);

inExec('cancelled before the go: pg_dump never runs, the session fails, done rejects with the reason', async () => {
  const bed = sessionBed();
  try {
    const session = bed.exec.session!;
    await session.query('SELECT 1');
    bed.exec.cancel(new Error('the container is unhealthy'));
    assert.match(await rejection(bed.exec.done), /the container is unhealthy/);
    assert.match(await rejection(session.query('SELECT 2')), /psql in the container failed/);
    // In the container, psql ends once the killed exec's stdin does, and pg_dump never starts.
    await eventually(() => bed.calls().includes('exec end 97'), 'the exec did not end without pg_dump');
    assertNoPgDump(bed.calls());
  } finally {
    bed.done();
  }
});

inExec("psql's error comes back as the query's error; without a go, the exec then ends without pg_dump", async () => {
  const bed = sessionBed();
  try {
    assert.match(
      await rejection(bed.exec.session!.query('SELECT FAIL')),
      // Only psql's message: its exit status, framed like a message, is not part of it.
      /psql in the container failed: ERROR: {2}boom$/,
    );
    assert.match(await rejection(bed.exec.done), /pg_dump failed \(exit 97\)/);
    assertNoPgDump(bed.calls());
  } finally {
    bed.done();
  }
});

inExec('pg_dump failing while a fingerprint query runs: done rejects at once with its message', async () => {
  const bed = sessionBed({ dumpSeconds: 0.1, dumpStatus: 1 });
  try {
    const session = bed.exec.session!;
    bed.exec.open('00000003-0000001B-1');
    const slow = session.query('SELECT SLEEP');
    // As the backup does: the session is closed once its fingerprint is done.
    slow.catch(() => {}).finally(() => session.close());
    const started = Date.now();
    assert.match(await rejection(bed.exec.done), /pg_dump failed \(exit 1\): pg_dump: error: permission denied/);
    assert.ok(Date.now() - started < 3_000, 'it waited for the session');
    assert.match(await rejection(slow), /psql in the container failed/);
  } finally {
    bed.done();
  }
});

inExec("text in the side answer that looks like the exec's own lines is only text", async () => {
  const forged = '{"comment": "planetarion-psql-end planetarion-dump-exit: 0 psql-out: x"}';
  const bed = sessionBed({ sideAnswer: forged });
  try {
    const session = bed.exec.session!;
    assert.equal(await session.query('SELECT 1'), [['row', 'SELECT 1;']]);
    bed.exec.open('00000003-0000001B-1');
    await session.close();
    assert.equal((await bed.exec.done).side, { answer: forged });
  } finally {
    bed.done();
  }
});

inExec('a snapshot name that is not one cancels the dump: pg_dump never runs', async () => {
  const bed = sessionBed();
  try {
    bed.exec.open("x'; DROP TABLE t; --");
    assert.match(await rejection(bed.exec.done), /not a snapshot name/);
    assertNoPgDump(bed.calls());
  } finally {
    bed.done();
  }
});

// Alpine's postgres image runs the script under busybox ash (the test bed installs busybox-static).
inExec('under busybox ash too: rows, the handoff, and a cancel before the go', async () => {
  const busybox = ['/bin/busybox', 'sh'];
  const bed = sessionBed({ shell: busybox });
  try {
    const session = bed.exec.session!;
    assert.equal(await session.query('SELECT 1'), [['row', 'SELECT 1;']]);
    bed.exec.open('00000003-0000001B-1');
    await session.close();
    assert.is((await bed.exec.done).bytes, '-- a dump\n'.length);
    assert.ok(
      bed.calls().some((c) => c.endsWith('--snapshot=00000003-0000001B-1')),
      bed.calls().join('\n'),
    );
  } finally {
    bed.done();
  }
  const cancelled = sessionBed({ shell: busybox });
  try {
    await cancelled.exec.session!.query('SELECT 1');
    cancelled.exec.cancel(new Error('unhealthy'));
    assert.match(await rejection(cancelled.exec.done), /unhealthy/);
    await eventually(() => cancelled.calls().includes('exec end 97'), 'the exec did not end without pg_dump');
    assertNoPgDump(cancelled.calls());
  } finally {
    cancelled.done();
  }
});

inExec.run();
