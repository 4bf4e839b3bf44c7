// The decisions behind the last checks before a new slot starts, as data: which mount holds the
// live data dir and whether the new container reaches it; which services wait for another to
// complete (depends_on: service_completed_successfully).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { completionDependencies } from '../lib/deploy/service-completion.ts';
import { dataMount, sharedStorage, type StorageRef } from '../lib/deploy/shared-storage.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const ref = (destination: string, where: { path?: string; volume?: string }, writable = true): StorageRef => ({
  path: where.path,
  volume: where.volume,
  destination,
  writable,
});

const storage = suite('shared storage');

storage(
  'the data mount is the deepest one holding the data dir; none when the data dir is in the container layer',
  () => {
    const live = [
      ref('/pgroot', { path: '/share/pgroot' }),
      ref('/pgroot/data', { volume: 'v' }),
      ref('/var/run/postgresql', { volume: 'sock' }),
    ];
    assert.is(dataMount(live, '/pgroot/data')!.volume, 'v');
    assert.is(dataMount(live, '/pgroot/other')!.path, '/share/pgroot');
    assert.is(dataMount(live, '/pgbaked'), undefined);
  },
);

storage(
  'a writable mount of the same volume, the same folder, or a folder inside or around it is shared; read-only and other folders are not',
  () => {
    const liveData = ref('/var/lib/postgresql/data', { path: '/share/pgdata', volume: 'p_pgdata' });
    assert.ok(sharedStorage([ref('/x', { volume: 'p_pgdata' })], [liveData]));
    assert.ok(sharedStorage([ref('/x', { path: '/share/pgdata' })], [liveData]));
    assert.ok(sharedStorage([ref('/x', { path: '/share' })], [liveData]));
    assert.ok(sharedStorage([ref('/x', { path: '/share/pgdata/sub' })], [liveData]));
    assert.not.ok(sharedStorage([ref('/x', { path: '/share/pgdata' }, false)], [liveData]));
    assert.not.ok(
      sharedStorage([ref('/x', { path: '/share/pgdata-s20260101_000000', volume: 's_pgdata' })], [liveData]),
    );
  },
);

storage(
  'completionDependencies: the services each one needs completed first, from the long depends_on form only',
  () => {
    const dir = makeTempDir();
    try {
      const file = join(dir, 'c.yml');
      writeFileSync(
        file,
        'services:\n  db: {image: x}\n  migrate: {image: x, depends_on: {db: {condition: service_healthy}}}\n  app:\n    image: x\n    depends_on:\n      db: {condition: service_healthy}\n      migrate: {condition: service_completed_successfully}\n  worker: {image: x, depends_on: [db, migrate]}\n',
      );
      assert.equal([...completionDependencies(file)], [['app', ['migrate']]]);
    } finally {
      removeTempDir(dir);
    }
  },
);
storage.run();
