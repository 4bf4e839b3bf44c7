// The game-shaped compose file's build:, relative bind mounts and ports, without Docker: content
// tags, the slot's compose file and its deviations, the sync manifest, the slot's source copies.
import { chmodSync, cpSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parse, stringify } from 'yaml';
import { readComposeFile } from '../lib/host/compose.ts';
import { copySlotSources, slotComposeFile } from '../lib/deploy/slot-compose.ts';
import { relativeBinds } from '../lib/deploy/relative-binds.ts';
import { buildSpecs, tagBuilds } from '../lib/remote/images.ts';
import { localManifest, treeHash } from '../lib/remote/sync.ts';
import { CliError, UsageError } from '../lib/errors.ts';
import { TempDirs } from './helpers/tmp.ts';
import { parseServiceImages } from '../lib/deploy/service-images.ts';

const fixture = join(import.meta.dirname, 'fixtures/stack-game');
const temps = new TempDirs('planetarion-images-');
const test = suite('build:, bind mounts and ports of the game-shaped file');

/** A workstation folder with the fixture's compose file and ./src. */
function workstation(): string {
  const dir = temps.make();
  cpSync(fixture, dir, { recursive: true });
  const file = join(dir, 'docker-compose.qnap.yml');
  writeFileSync(file, readFileSync(file, 'utf8').replaceAll('__SHARE__', join(dir, 'share')));
  return dir;
}
const tags = (dir: string) =>
  tagBuilds(readComposeFile(join(dir, 'docker-compose.qnap.yml')), dir, '/share/CACHEDEV1_DATA/planetarion', 'x86_64');

test('buildSpecs: the services that build (no image:), their context, Dockerfile, target and args', () => {
  const specs = buildSpecs(readComposeFile(join(fixture, 'docker-compose.qnap.yml')));
  assert.equal(
    specs.map((s) => s.service),
    ['backend', 'frontend'],
  );
  assert.equal(specs[0], {
    service: 'backend',
    context: 'src',
    dockerfile: './backend/Dockerfile',
    target: 'production',
    args: { APP_VERSION: '1.0', NODE_ENV: 'production' },
  });
  assert.equal(
    buildSpecs({
      services: { a: { build: '.' }, b: { build: { context: 'x', args: ['K=v=w'] } }, c: { build: '.', image: 'c:1' } },
    }).map((s) => [s.service, s.context, s.dockerfile, s.args]),
    [
      ['a', '.', 'Dockerfile', {}],
      ['b', 'x', 'Dockerfile', { K: 'v=w' }],
    ],
  );
  assert.throws(
    () => buildSpecs({ services: { a: { build: { context: '../elsewhere' } } } }),
    (e: unknown) => e instanceof UsageError && /outside the compose file's folder/.test(e.message),
  );
  assert.throws(
    () => buildSpecs({ services: { a: { build: { context: '.', args: ['SECRET'] } } } }),
    (e: unknown) => e instanceof UsageError && /'SECRET' has no value/.test(e.message),
  );
});

test('tagBuilds: the tag follows the content (files, Dockerfile, target, args), not node_modules, .git or __pycache__', () => {
  const dir = workstation();
  const first = tags(dir);
  assert.match(first[0]!.tag, /^planetarion-backend:c[0-9a-f]{16}$/);
  assert.is(first[0]!.localTag, first[0]!.tag.replace(':c', ':build-c'));
  assert.is(first[0]!.platform, 'linux/amd64');
  assert.is(
    tagBuilds(readComposeFile(join(dir, 'docker-compose.qnap.yml')), dir, '/x/planetarion', 'aarch64')[0]!.platform,
    'linux/arm64',
  );
  for (const junk of ['node_modules/m/index.js', '.git/HEAD', 'backend/__pycache__/x.pyc']) {
    mkdirSync(join(dir, 'src', junk, '..'), { recursive: true });
    writeFileSync(join(dir, 'src', junk), 'x');
  }
  assert.equal(
    tags(dir).map((t) => t.tag),
    first.map((t) => t.tag),
  );
  writeFileSync(join(dir, 'src/VERSION'), 'v2\n');
  const changed = tags(dir);
  assert.is.not(changed[0]!.tag, first[0]!.tag);
  chmodSync(join(dir, 'src/VERSION'), 0o600);
  assert.is.not(tags(dir)[0]!.tag, changed[0]!.tag, 'a mode change is a change');
  const file = join(dir, 'docker-compose.qnap.yml');
  writeFileSync(file, readFileSync(file, 'utf8').replace('APP_VERSION: "1.0"', 'APP_VERSION: "1.1"'));
  assert.is.not(tags(dir)[0]!.tag, tags(workstation())[0]!.tag);
  writeFileSync(file, readFileSync(file, 'utf8').replace('./backend/Dockerfile', '../Dockerfile'));
  assert.throws(
    () => tags(dir),
    (e: unknown) => e instanceof UsageError && /outside its build context/.test(e.message),
  );
});

test("the slot file: build: becomes the given image, ./src the slot's own copy, the database publishes nothing, every change said", () => {
  const dir = workstation();
  const names = ['db', 'backend', 'frontend'].map((service) => ({ service, canonicalName: `planetarion-${service}` }));
  const slotDir = join(dir, 'deploy/planetarion-s1');
  const out = slotComposeFile(join(dir, 'docker-compose.qnap.yml'), {
    dbService: 'db',
    slotId: 's1',
    names,
    projectDir: dir,
    slotDir,
    images: { backend: 'planetarion-backend:cabc' },
  });
  const doc = parse(out.yaml);
  assert.is(doc.services.backend.image, 'planetarion-backend:cabc');
  assert.is(doc.services.backend.build, undefined);
  assert.ok(doc.services.frontend.build, 'no image given: it keeps build:');
  assert.equal(doc.services.backend.volumes, [`${slotDir}/src:/app/src:ro`, 'pgsocket:/var/run/postgresql']);
  assert.is(doc.services.db.ports, undefined);
  assert.equal(doc.services.backend.ports, ['0.0.0.0:5000:5000']);
  assert.equal(doc.services.backend.deploy, { resources: { limits: { memory: '256M' } } });
  assert.equal(doc.services.backend.depends_on, { db: { condition: 'service_healthy' } });
  // Nothing synced from a workstation: the NAS folder's own ./src is copied.
  assert.equal(out.copies, [{ from: `${dir}/src`, to: `${slotDir}/src` }]);
  const said = out.deviations.join('\n');
  assert.match(said, /'db' service publishes 127\.0\.0\.1:5432:5432: the new database does not/);
  assert.match(said, /'backend' service publishes 0\.0\.0\.0:5000:5000: kept/);
  assert.match(
    said,
    /'backend' service builds \(context \.\/src, dockerfile \.\/backend\/Dockerfile, target production\): this slot runs the image planetarion-backend:cabc/,
  );
  assert.match(said, /'frontend' service builds .* no image was given: Compose builds it here/);
  assert.match(said, /'backend' service bind-mounts \.\/src: this slot mounts its own copy/);
  // What deploy-to-qnap synced wins over the NAS folder's own copy.
  mkdirSync(join(dir, 'deploy/sync/src'), { recursive: true });
  const synced = slotComposeFile(join(dir, 'docker-compose.qnap.yml'), {
    dbService: 'db',
    slotId: 's1',
    names,
    projectDir: dir,
    slotDir,
  });
  assert.equal(synced.copies, [{ from: `${dir}/deploy/sync/src`, to: `${slotDir}/src` }]);
  assert.equal(
    relativeBinds(readComposeFile(join(dir, 'docker-compose.qnap.yml')), 'db').map((b) => [b.service, b.path]),
    [['backend', 'src']],
  );
});

test("the database service's relative bind mounts are its storage: never copied into the slot, never synced", () => {
  const dir = workstation();
  const file = join(dir, 'docker-compose.qnap.yml');
  const doc = parse(readFileSync(file, 'utf8'));
  doc.services.db.volumes = ['./pgroot:/pgroot', ...(doc.services.db.volumes ?? [])];
  writeFileSync(file, stringify(doc));
  const names = ['db', 'backend', 'frontend'].map((service) => ({ service, canonicalName: `planetarion-${service}` }));
  const out = slotComposeFile(file, {
    dbService: 'db',
    slotId: 's1',
    names,
    projectDir: dir,
    slotDir: join(dir, 'deploy/planetarion-s1'),
  });
  assert.equal(
    out.copies.map((c) => c.to),
    [join(dir, 'deploy/planetarion-s1/src')],
  );
  assert.not.match(out.deviations.join('\n'), /'db' service bind-mounts/);
  assert.equal(
    relativeBinds(readComposeFile(file), 'db').map((b) => b.service),
    ['backend'],
  );
});

test('copySlotSources: a full copy with modes kept; a missing source is a clear error', () => {
  const dir = workstation();
  chmodSync(join(dir, 'src/backend/run.sh'), 0o750);
  const to = join(dir, 'deploy/slot/src');
  copySlotSources([{ from: join(dir, 'src'), to }]);
  assert.is(readFileSync(join(to, 'VERSION'), 'utf8'), 'v1\n');
  assert.is(statSync(join(to, 'backend/run.sh')).mode & 0o777, 0o750);
  assert.throws(
    () => copySlotSources([{ from: join(dir, 'missing'), to: join(dir, 'deploy/slot/x') }]),
    (e: unknown) => e instanceof CliError && /does not exist on the NAS/.test(e.message),
  );
});

test('localManifest: files by path with mode and hash, links by target, the excludes left out', () => {
  const dir = workstation();
  mkdirSync(join(dir, 'src/node_modules'));
  writeFileSync(join(dir, 'src/node_modules/x'), 'x');
  const manifest = localManifest(dir, ['src']);
  assert.equal(Object.keys(manifest).sort(), [
    'src/VERSION',
    'src/backend/Dockerfile',
    'src/backend/run.sh',
    'src/frontend/Dockerfile',
  ]);
  assert.match(manifest['src/VERSION']!, /^f:644:[0-9a-f]{64}$/);
  assert.is(treeHash(manifest), treeHash(localManifest(dir, ['src'])));
  assert.throws(
    () => localManifest(dir, ['nothing']),
    (e: unknown) => e instanceof UsageError && /does not exist/.test(e.message),
  );
});

test('parseServiceImages: SERVICE=IMAGE pairs; anything else is a usage error', () => {
  assert.equal(parseServiceImages('backend=p-backend:c12,frontend=p-frontend:c34'), {
    backend: 'p-backend:c12',
    frontend: 'p-frontend:c34',
  });
  assert.equal(parseServiceImages(undefined), {});
  for (const bad of ['backend', 'backend=$(x)', '=image'])
    assert.throws(
      () => parseServiceImages(bad),
      (e: unknown) => e instanceof UsageError,
      bad,
    );
});

test.after(() => temps.removeAll());
test.run();
