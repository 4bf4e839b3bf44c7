// readComposeServices: canonical names and Compose's start order (each service after what it
// depends on, in list or map form), which the deployment follows when it starts a new slot.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { oneShotServices, readComposeServices } from '../lib/host/compose.ts';
import { slotComposeFile } from '../lib/deploy/slot-compose.ts';
import { CliError } from '../lib/errors.ts';

function composeFile(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'planetarion-compose-'));
  const path = join(dir, 'docker-compose.yml');
  writeFileSync(path, yaml);
  return path;
}

test('services come in start order with their dependencies and canonical names', () => {
  const path = composeFile(`
services:
  frontend:
    image: web
    depends_on:
      backend:
        condition: service_healthy
  backend:
    image: api
    container_name: planetarion-backend
    depends_on: [db]
  db:
    image: postgres
  worker:
    image: api
`);
  try {
    const services = readComposeServices(path, 'db', 'planetarion-db', 'planetarion');
    assert.equal(
      services.map((s) => s.service),
      ['db', 'backend', 'frontend', 'worker'],
    );
    assert.equal(
      services.map((s) => s.canonicalName),
      ['planetarion-db', 'planetarion-backend', 'planetarion-frontend', 'planetarion-worker'],
    );
    assert.equal(services.find((s) => s.service === 'frontend')!.dependsOn, [{ service: 'backend', healthy: true }]);
    assert.equal(services.find((s) => s.service === 'backend')!.dependsOn, [{ service: 'db', healthy: false }]);
  } finally {
    rmSync(join(path, '..'), { recursive: true, force: true });
  }
});

test('a depends_on cycle and a missing database service are errors that name them', () => {
  const cycle = composeFile(
    'services:\n  db: {image: p}\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n',
  );
  const noDb = composeFile('services:\n  app: {image: x}\n');
  try {
    assert.throws(() => readComposeServices(cycle, 'db', 'planetarion-db', 'p'), /depends_on cycle through 'a'/);
    assert.throws(() => readComposeServices(noDb, 'db', 'planetarion-db', 'p'), /has no service 'db'[\s\S]*/);
  } finally {
    for (const p of [cycle, noDb]) rmSync(join(p, '..'), { recursive: true, force: true });
  }
});

// slotComposeFile: the new slot's database service mounts only what the slot owns, for every
// way a real compose file keeps PostgreSQL's state; what cannot be isolated is refused.
const slotOf = (yaml: string) => {
  const path = composeFile(yaml);
  try {
    const names = readComposeServices(path, 'db', 'planetarion-db', 'planetarion');
    const out = slotComposeFile(path, { dbService: 'db', slotId: 's20261130_120000', names });
    return {
      ...out,
      doc: parse(out.yaml) as {
        services: Record<string, { volumes?: string[]; container_name?: string }>;
        volumes?: Record<string, Record<string, unknown> | null>;
      },
    };
  } finally {
    rmSync(join(path, '..'), { recursive: true, force: true });
  }
};
const refusal = (yaml: string): CliError => {
  try {
    slotOf(yaml);
  } catch (error) {
    assert.instance(error, CliError);
    return error as CliError;
  }
  throw new Error('expected a refusal');
};
const db = (volumes: string, extra = '') =>
  `services:\n  db:\n    image: postgres:15\n    volumes:\n${volumes}\n${extra}`;

test('a named volume bound to a NAS folder by driver_opts: the slot binds a sibling folder of its own', () => {
  const { doc, folders, warnings } = slotOf(
    db(
      '      - dbdata:/var/lib/postgresql/data',
      'volumes:\n  dbdata:\n    driver: local\n    driver_opts:\n      type: none\n      o: bind\n      device: /share/CACHEDEV1_DATA/planetarion/pgdata\n',
    ),
  );
  assert.equal(doc.services.db!.volumes, ['dbdata:/var/lib/postgresql/data']);
  assert.equal(doc.volumes!.dbdata, {
    driver: 'local',
    driver_opts: { type: 'none', o: 'bind', device: '/share/CACHEDEV1_DATA/planetarion/pgdata-s20261130_120000' },
  });
  assert.equal(folders, ['/share/CACHEDEV1_DATA/planetarion/pgdata-s20261130_120000']);
  assert.match(
    warnings.join('\n'),
    /binds \/share\/CACHEDEV1_DATA\/planetarion\/pgdata; this slot binds its own folder .*pgdata-s20261130_120000 \(created 0700\)/,
  );
});

test('external and fixed-name volumes are shared by every project: the slot gets a volume of its own', () => {
  const external = slotOf(db('      - pgdata:/var/lib/postgresql/data', 'volumes:\n  pgdata:\n    external: true\n'));
  assert.equal(external.doc.services.db!.volumes, ['pgdata_slot:/var/lib/postgresql/data']);
  assert.equal(external.doc.volumes!.pgdata_slot, {});
  const named = slotOf(
    db('      - pgdata:/var/lib/postgresql/data', 'volumes:\n  pgdata:\n    name: planetarion_pgdata\n'),
  );
  assert.equal(named.doc.services.db!.volumes, ['pgdata_slot:/var/lib/postgresql/data']);
  assert.match(named.warnings.join('\n'), /fixed-name \('planetarion_pgdata'\) volume 'pgdata'/);
});

test('bind sources written as a path, ~ or ${VAR} (with a default holding a colon) get a slot volume', () => {
  for (const source of ['./data', '/share/pg', '~/pg', '${PG_DATA_DIR}', '${PG_DATA_DIR:-./data}']) {
    const { doc } = slotOf(db(`      - "${source}:/var/lib/postgresql/data"`));
    assert.equal(doc.services.db!.volumes, ['slot_pgdata:/var/lib/postgresql/data'], source);
    assert.equal(doc.volumes!.slot_pgdata, {}, source);
  }
  const long = slotOf(db('      - type: bind\n        source: ${DATA}\n        target: /var/lib/postgresql/data'));
  assert.equal(long.doc.services.db!.volumes, ['slot_pgdata:/var/lib/postgresql/data']);
});

test('a mount of /var/lib/postgresql, or of the dir PGDATA lives in, is the data dir too', () => {
  assert.equal(slotOf(db('      - /share/pg:/var/lib/postgresql')).doc.services.db!.volumes, [
    'slot_pgdata:/var/lib/postgresql',
  ]);
  const pgdata = slotOf(db('      - /share/pg:/srv/pg', '    environment:\n      PGDATA: /srv/pg/data\n'));
  assert.equal(pgdata.doc.services.db!.volumes, ['slot_pgdata:/srv/pg']);
});

test('a bind-mounted socket folder: the database and the services sharing it get the slot socket volume', () => {
  const { doc } = slotOf(`services:
  db:
    image: postgres:15
    volumes:
      - dbdata:/var/lib/postgresql/data
      - ./run:/var/run/postgresql
  app:
    image: app
    volumes:
      - ./run:/var/run/postgresql
      - ./static:/static:ro
volumes:
  dbdata:
`);
  assert.equal(doc.services.db!.volumes, ['dbdata:/var/lib/postgresql/data', 'slot_socket:/var/run/postgresql']);
  assert.equal(doc.services.app!.volumes, ['slot_socket:/var/run/postgresql', './static:/static:ro']);
});

test("plain named, anonymous and unrelated mounts are already the slot's own and stay as written", () => {
  const { doc, folders, warnings } = slotOf(
    db(
      '      - dbdata:/var/lib/postgresql/data\n      - /var/run/postgresql\n      - ./init:/docker-entrypoint-initdb.d:ro',
      'volumes:\n  dbdata:\n',
    ),
  );
  assert.equal(doc.services.db!.volumes, [
    'dbdata:/var/lib/postgresql/data',
    '/var/run/postgresql',
    './init:/docker-entrypoint-initdb.d:ro',
  ]);
  assert.equal([folders, warnings], [[], []]);
});

test('settings a service takes from an anchor by a merge key (<<:) are rewritten like its own', () => {
  const { doc } = slotOf(
    [
      'x-db: &db-defaults',
      '  image: postgres:15',
      '  container_name: planetarion-db',
      '  ports: ["5432:5432"]',
      '  volumes:',
      '    - pgdata:/var/lib/postgresql/data',
      'x-restart: &restart',
      '  restart: unless-stopped',
      'services:',
      '  db:',
      '    <<: [*db-defaults, *restart]',
      '    environment: {POSTGRES_DB: planetarion}',
      'volumes:',
      '  pgdata:',
      '    external: true',
      '',
    ].join('\n'),
  );
  const slotDb = doc.services.db as Record<string, unknown>;
  assert.not.ok('<<' in slotDb, 'a merge key reached the slot');
  assert.equal(slotDb.volumes, ['pgdata_slot:/var/lib/postgresql/data']);
  assert.is(slotDb.container_name, 'planetarion-db-s20261130_120000');
  assert.is(slotDb.ports, undefined);
  assert.is(slotDb.restart, 'unless-stopped');
  assert.equal(slotDb.environment, { POSTGRES_DB: 'planetarion' });
});

test('layouts that cannot be isolated are refused with exit 2, naming the mount', () => {
  const inside = refusal(
    db(
      '      - dbdata:/var/lib/postgresql/data\n      - /share/wal:/var/lib/postgresql/data/pg_wal',
      'volumes:\n  dbdata:\n',
    ),
  );
  assert.is(inside.exitCode, 2);
  assert.match(
    inside.message,
    /the 'db' service mounts \/share\/wal:\/var\/lib\/postgresql\/data\/pg_wal: it is inside the data dir/,
  );
  assert.match(inside.advice!, /read-only \(:ro\).*Nothing was started/);
  // Read-only inside the data dir (a config file) is shared harmlessly.
  assert.equal(slotOf(db('      - ./pg.conf:/var/lib/postgresql/data/postgresql.conf:ro')).doc.services.db!.volumes, [
    './pg.conf:/var/lib/postgresql/data/postgresql.conf:ro',
  ]);
  assert.match(
    refusal(
      db(
        '      - dbdata:/var/lib/postgresql/data',
        'volumes:\n  dbdata:\n    driver_opts:\n      type: nfs\n      o: addr=10.0.0.2\n      device: ":/pg"\n',
      ),
    ).message,
    /volume 'dbdata' has driver_opts \(type=nfs, o=addr=10.0.0.2, device=:\/pg\) that are not a local bind/,
  );
  assert.match(
    refusal(
      db(
        '      - dbdata:/var/lib/postgresql/data',
        'volumes:\n  dbdata:\n    driver_opts:\n      type: none\n      o: bind\n      device: ${DATA}\n',
      ),
    ).message,
    /binds '\$\{DATA\}', not an absolute folder/,
  );
  assert.match(
    refusal(db('      - dbdata:/var/lib/postgresql/data', 'volumes:\n  dbdata:\n    driver: rexray\n')).message,
    /uses the driver 'rexray'/,
  );
  assert.match(
    refusal('services:\n  db:\n    image: postgres\n    volumes_from: [old]\n').message,
    /uses volumes_from/,
  );
});

test('bad compose files: one line each, exit 2', () => {
  for (const [yaml, message] of [
    ['services:\n  db: [unclosed\n', /is not valid YAML/],
    ['', /has no services/],
    ['# only a comment\n', /has no services/],
    ['services:\n  db:\n  app: {image: x}\n', /service 'db' has no body/],
  ] as const) {
    const path = composeFile(yaml);
    try {
      const error = (() => {
        try {
          readComposeServices(path, 'db', 'planetarion-db', 'p');
        } catch (e) {
          return e as CliError;
        }
        throw new Error(`no error for ${JSON.stringify(yaml)}`);
      })();
      assert.instance(error, CliError);
      assert.is(error.exitCode, 2);
      assert.match(error.message, message);
      assert.not.match(error.message, /\n/);
    } finally {
      rmSync(join(path, '..'), { recursive: true, force: true });
    }
  }
});

test('one-shot services: no restart policy or restart "no"', () => {
  const path = composeFile(
    'services:\n  db: {image: p, restart: unless-stopped}\n  migrate: {image: m, restart: "no"}\n  seed: {image: m}\n  web: {image: w, restart: always}\n',
  );
  try {
    assert.equal(oneShotServices(path), ['migrate', 'seed']);
  } finally {
    rmSync(join(path, '..'), { recursive: true, force: true });
  }
});

test.run();
