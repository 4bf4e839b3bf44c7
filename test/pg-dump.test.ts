// The dump's exec (dump/pg-dump.ts): values reach sh as arguments, and the side query's answer
// comes back on stderr apart from pg_dump's own messages.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { dumpCommand, splitSideAnswer } from '../lib/dump/pg-dump.ts';

const dump = suite('pg_dump exec');

dump('the user, database and side query are arguments of sh, never script text', () => {
  const query = 'SELECT \'x\'; $(rm -rf /) `id` "quoted"';
  const argv = dumpCommand({ user: 'u"1', database: "d'b", snapshot: undefined, format: 'gzip', sideQuery: query });
  assert.is(argv[0], 'sh');
  const script = argv[2]!;
  for (const value of ['u"1', "d'b", query]) assert.not.ok(script.includes(value), value);
  assert.equal(argv.slice(3, 7), ['sh', 'u"1', "d'b", query]);
  assert.equal(argv.slice(7, 9), ['pg_dump', '--no-password']);
});

dump('without a side query the third argument is empty (the script skips psql)', () => {
  const argv = dumpCommand({ user: 'u', database: 'd', snapshot: undefined, format: 'plain' });
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

dump.run();
