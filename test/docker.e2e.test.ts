// Docker.inspectMany and waitHealthy against real containers: several states in one call, in
// the order asked, a missing one among them; waitHealthy returns for healthy ones and names a
// container that is missing or has exited.
import { execFileSync } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Docker } from '../lib/host/docker.ts';
import { createShell } from '../lib/host/shell.ts';
import { removeDb, scratchName, testImage, testLabel } from './helpers/db.ts';

const docker = new Docker('docker', createShell());
const running = scratchName('pb-inspect-running');
const exited = scratchName('pb-inspect-exited');
const missing = scratchName('pb-inspect-missing');
let ready = false;

const run = (name: string, ...command: string[]) =>
  execFileSync('docker', [
    'run',
    '-d',
    '--name',
    name,
    '--network',
    'none',
    '--no-healthcheck',
    '--label',
    `${testLabel}=1`,
    '--entrypoint',
    command[0]!,
    testImage,
    ...command.slice(1),
  ]);

const inspect = suite('Docker.inspectMany');

inspect('setup: a running and an exited container', async () => {
  run(running, 'sleep', 'infinity');
  run(exited, 'true');
  execFileSync('docker', ['wait', exited]);
  ready = true;
});

inspect('states of several containers in one call, in the order asked, a missing one among them', async () => {
  assert.ok(ready, 'setup failed');
  const [a, b, c, d] = await docker.inspectMany([exited, missing, running, exited]);
  assert.equal([a!.exists, a!.running, a!.status], [true, false, 'exited']);
  assert.equal([b!.exists, b!.running, b!.status], [false, false, undefined]);
  assert.equal([c!.exists, c!.running, c!.status, c!.health], [true, true, 'running', undefined]);
  assert.equal(d, a);
  assert.is(c!.image, testImage);
  assert.equal(await docker.inspectMany([]), []);
  assert.equal(await docker.inspect(running), c);
});

inspect('waitHealthy returns for running ones and names a missing or exited container at once', async () => {
  assert.ok(ready, 'setup failed');
  await docker.waitHealthy([running], 5_000);
  const started = Date.now();
  for (const [names, expected] of [
    [[running, missing], `container '${missing}' is missing`],
    [[exited, running], `container '${exited}' is exited`],
  ] as const) {
    try {
      await docker.waitHealthy([...names], 20_000);
      assert.unreachable('waitHealthy returned');
    } catch (error) {
      assert.is((error as Error).message, expected);
    }
  }
  assert.ok(Date.now() - started < 5_000, 'it waited for the timeout');
});

inspect.after(async () => {
  await Promise.all([removeDb(running), removeDb(exited)]);
});

inspect.run();
