// deploy-to-qnap --local when the new slot's database server would not be a cluster of its own,
// end to end on the real-shaped stack: a data dir the compose file does not show (PGDATA from an
// env_file, on a bind-mounted folder) is refused before the new server starts (exit 2), and a
// server that starts as the same cluster (an image with its data baked in) is stopped by the
// system_identifier check before any statement runs against it. Either way the live slot serves
// on, untouched.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool, waitFor } from './helpers/cli.ts';
import { writersRun } from './helpers/deploy-faults.ts';
import { containersOf, makeTestNas, sqlIn, type TestNas, health } from './helpers/stack.ts';
import { scratchName } from './helpers/db.ts';

const nases: TestNas[] = [];
const deploy = (n: TestNas) =>
  runTool('deploy-to-qnap', ['--local', '--json', '--health-timeout', '300', ...n.deployArgs], n.env);

/** The first deployment of a NAS whose compose file `edit` reshapes; the app healthy. */
async function firstDeployment(
  edit: (yaml: string) => string,
  prepare: (n: TestNas) => void = () => {},
): Promise<TestNas> {
  const n = makeTestNas('real');
  nases.push(n);
  n.setCompose(edit);
  prepare(n);
  const first = await deploy(n);
  assert.is(first.code, 0, first.stderr);
  await waitFor('the app', () => health(`${n.project}-app`) === 'healthy', 300_000, 300);
  return n;
}

/** The live slot is as it was: the same containers in the same states, connections allowed, the writers writing. */
async function liveUntouched(n: TestNas, before: Record<string, string>, systemId: string): Promise<void> {
  assert.equal(containersOf(n.project), before);
  assert.is(sqlIn(n.container, 'SELECT system_identifier FROM pg_control_system()'), systemId);
  assert.is(sqlIn(n.container, "SELECT datallowconn FROM pg_database WHERE datname = 'planetarion'"), 't');
  await writersRun(n);
}

const isolation = suite('deploy-to-qnap: the new database server is never the live cluster');

isolation(
  'PGDATA from an env_file on a bind-mounted folder: refused before the new server starts (exit 2), naming the mount',
  async () => {
    const n = await firstDeployment(
      (yaml) =>
        yaml
          .replace('      - pgdata:/var/lib/postgresql/data\n', '      - ./pgroot:/pgroot\n')
          .replace(
            '    restart: unless-stopped\n    environment:\n      POSTGRES_USER',
            '    restart: unless-stopped\n    env_file: ./db.env\n    environment:\n      POSTGRES_USER',
          ),
      (nas) => writeFileSync(join(nas.dir, 'db.env'), 'PGDATA=/pgroot/data\n'),
    );
    assert.is(sqlIn(n.container, 'SHOW data_directory'), '/pgroot/data');
    const before = containersOf(n.project);
    const systemId = sqlIn(n.container, 'SELECT system_identifier FROM pg_control_system()');
    const r = await deploy(n);
    assert.is(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `the new slot's database would mount ${join(n.dir, 'pgroot')} at /pgroot writable, and the live '${n.container}' keeps its data dir there`,
      ),
    );
    assert.match(r.stderr, /Nothing was started/);
    assert.not.match(r.stderr, /\n\s+at /);
    await liveUntouched(n, before, systemId);
  },
);

const baked = `${scratchName('pb-baked')}:latest`;

/** An image whose data dir (not a volume) holds an initialised cluster: every container of it starts as that one cluster. */
function bakeImage(): void {
  const builder = scratchName('pb-bake');
  execFileSync(
    'docker',
    [
      'run',
      '-d',
      '--name',
      builder,
      '--network',
      'none',
      '-e',
      'POSTGRES_USER=planetarion_user',
      '-e',
      'POSTGRES_DB=planetarion',
      '-e',
      'PGDATA=/pgbaked',
      'planetarion-test-pg:latest',
    ],
    { stdio: 'ignore' },
  );
  try {
    execFileSync(
      'sh',
      [
        '-c',
        'until docker exec "$1" pg_isready -q -h /var/run/postgresql -U planetarion_user -d planetarion; do sleep 0.5; done; docker stop "$1" >/dev/null',
        'sh',
        builder,
      ],
      { timeout: 600_000 },
    );
    execFileSync('docker', ['commit', builder, baked], { stdio: 'ignore' });
  } finally {
    execFileSync('docker', ['rm', '-f', '-v', builder], { stdio: 'ignore' });
  }
}

isolation(
  'a server that starts as the same cluster (its data baked into the image): aborted on system_identifier before any statement, the live slot untouched',
  async () => {
    bakeImage();
    const n = await firstDeployment((yaml) =>
      yaml
        .replace('  db:\n    image: planetarion-test-pg:latest\n', `  db:\n    image: ${baked}\n`)
        .replace('      - pgdata:/var/lib/postgresql/data\n', '')
        .replace('      POSTGRES_FSYNC: "off"\n', '      POSTGRES_FSYNC: "off"\n      PGDATA: /pgbaked\n'),
    );
    const before = containersOf(n.project);
    const systemId = sqlIn(n.container, 'SELECT system_identifier FROM pg_control_system()');
    const r = await deploy(n);
    assert.is(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `the new database server '${n.container}-s\\d{8}_\\d{6}' is the live cluster \\(both have system_identifier ${systemId}\\)`,
      ),
    );
    assert.not.match(r.stderr, /\n\s+at /);
    // Nothing was run against it: no restore began, the writers were never stopped.
    assert.not.match(r.stderr, /Stopping the live writers|Restore attempt/);
    await liveUntouched(n, before, systemId);
  },
);

isolation.after(() => {
  while (nases.length) nases.pop()!.cleanup();
  execFileSync('sh', ['-c', 'docker rmi -f "$1" >/dev/null 2>&1 || true', 'sh', baked]);
});
isolation.run();
