// The slot's compose file prepared for online deployments: socket folder on a named volume,
// wal_level=logical in the server's command, and the live slot's socket volume mounted when the
// slot is filled online.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { onlineFacts } from '../lib/deploy/replication.ts';
import { parse } from 'yaml';
import { onlineSlotYaml } from '../lib/deploy/slot-online.ts';

type Doc = { services: Record<string, { volumes?: string[]; command?: unknown }>; volumes?: Record<string, unknown> };
const prepare = (yaml: string, live?: string) => {
  const out = onlineSlotYaml(yaml, 'db', 'game-s20261130_130000', live);
  return { doc: parse(out.yaml) as Doc, notes: out.notes };
};
const db = (body: string, rest = '') => `services:\n  db:\n    image: postgres:15\n${body}${rest}`;

test("no command: the image runs postgres with -c wal_level=logical; a named socket volume becomes the slot's external one (the next slot mounts it, so Compose must not remove it)", () => {
  const { doc, notes } = prepare(
    db(
      '    volumes:\n      - pgsocket:/var/run/postgresql\n',
      '  app:\n    image: game\n    volumes:\n      - pgsocket:/var/run/postgresql\nvolumes:\n  pgsocket:\n',
    ),
  );
  assert.equal(doc.services.db!.command, ['-c', 'wal_level=logical']);
  assert.equal(doc.services.db!.volumes, ['pgsocket:/var/run/postgresql']);
  assert.equal(doc.services.app!.volumes, ['pgsocket:/var/run/postgresql']);
  assert.equal(doc.volumes!.pgsocket, { external: true, name: 'game-s20261130_130000_dbsocket' });
  assert.equal(notes, []);
});

test('a postgres command keeps its options and gets wal_level=logical, replacing another wal_level', () => {
  assert.equal(prepare(db('    command: postgres -c shared_buffers=256MB\n')).doc.services.db!.command, [
    'postgres',
    '-c',
    'shared_buffers=256MB',
    '-c',
    'wal_level=logical',
  ]);
  assert.equal(
    prepare(db('    command: ["-c", "wal_level=replica", "-c", "max_connections=50"]\n')).doc.services.db!.command,
    ['-c', 'wal_level=logical', '-c', 'max_connections=50'],
  );
});

test('another command is left alone, and the plan says the next deployment will be offline', () => {
  const { doc, notes } = prepare(
    db('    command: ["/start.sh"]\n    volumes:\n      - s:/run/postgresql\n', 'volumes:\n  s:\n'),
  );
  assert.equal(doc.services.db!.command, ['/start.sh']);
  assert.match(notes.join('\n'), /command is not 'postgres \.\.\.' .*wal_level=logical was not added.*offline/);
});

test('no socket mount, or an anonymous one: the socket folder goes on a named volume of the slot', () => {
  const none = prepare(db('    volumes:\n      - pgdata:/var/lib/postgresql/data\n', 'volumes:\n  pgdata:\n'));
  assert.equal(none.doc.services.db!.volumes, ['pgdata:/var/lib/postgresql/data', 'slot_socket:/var/run/postgresql']);
  assert.equal(none.doc.volumes!.slot_socket, { external: true, name: 'game-s20261130_130000_dbsocket' });
  assert.match(
    none.notes.join('\n'),
    /socket folder \/var\/run\/postgresql is on the slot's volume game-s20261130_130000_dbsocket/,
  );
  const anonymous = prepare(db('    volumes:\n      - /run/postgresql\n'));
  assert.equal(anonymous.doc.services.db!.volumes, ['slot_socket:/run/postgresql']);
});

test("filled online: the live slot's socket volume is mounted at its own path, external (removing the slot never removes it)", () => {
  const { doc } = prepare(
    db('    volumes:\n      - pgsocket:/var/run/postgresql\n', 'volumes:\n  pgsocket:\n'),
    'game-s20261130_120000_pgsocket',
  );
  assert.equal(doc.services.db!.volumes, ['pgsocket:/var/run/postgresql', 'live_socket:/var/run/postgresql-live']);
  assert.equal(doc.volumes!.live_socket, { external: true, name: 'game-s20261130_120000_pgsocket' });
});

test('the live database read for an online fill: wal_level, and what logical replication would leave out', () => {
  assert.equal(onlineFacts('logical 0 0 0\n'), { wal: 'logical', notCopied: undefined });
  assert.equal(onlineFacts('replica 0 0 0'), { wal: 'replica', notCopied: undefined });
  assert.equal(onlineFacts('logical 3 1 0'), {
    wal: 'logical',
    notCopied:
      'the live database holds 3 large objects, 1 populated materialized view, which logical replication does not copy',
  });
  assert.match(onlineFacts('logical 0 0 2').notCopied!, /holds 2 unlogged tables,/);
  // A failed query (its error text) is no answer: not known to be logical, and the reason says why.
  const failed = "SQL in 'db' (planetarion) failed: FATAL: the database system is starting up";
  assert.equal(onlineFacts(failed), { wal: 'unknown', notCopied: undefined, unread: failed });
});

test.run();
