// Docker.inspectMany and waitHealthy against real containers: several states in one call, in
// the order asked, a missing one among them; waitHealthy returns for healthy ones and names a
// container that is missing or has exited; with `probe`, it runs a starting container's own
// health check command itself instead of waiting `interval` for Docker's first run. inspectQuick
// takes a running container's state from the engine's socket, and anything else from the CLI.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Docker, healthCheckArgv } from '../lib/host/docker.ts';
import { createShell } from '../lib/host/shell.ts';
import { removeDb, runTestContainer, scratchName, testImage } from './helpers/db.ts';

const docker = new Docker('docker', createShell());
const running = scratchName('pb-inspect-running');
const exited = scratchName('pb-inspect-exited');
const missing = scratchName('pb-inspect-missing');
let ready = false;

const runWith = (name: string, options: string[], ...command: string[]) => runTestContainer(name, command, options);
const run = (name: string, ...command: string[]) => runTestContainer(name, command);

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

inspect(
  "inspectQuick: a running container's state from the engine's socket is the CLI's, with no CLI at all",
  async () => {
    assert.ok(ready, 'setup failed');
    // A docker binary that does not exist: only the socket can answer.
    const socketOnly = new Docker('/nonexistent/docker', createShell());
    assert.equal(await socketOnly.inspectQuick(running), await docker.inspect(running));
    // Not running, or missing: the socket's answer is not taken, the CLI is asked (and fails here).
    for (const name of [exited, missing])
      await socketOnly.inspectQuick(name).then(
        () => assert.unreachable(`the socket's answer was taken for ${name}`),
        (error: Error) => assert.match(error.message, /nonexistent/),
      );
    assert.equal(await docker.inspectQuick(exited), await docker.inspect(exited));
    assert.equal(await docker.inspectQuick(missing), await docker.inspect(missing));
  },
);

inspect(
  'inspectQuick: a socket that answers 500, closes without an answer, answers what is not a container, or is not there: the CLI answers',
  async () => {
    assert.ok(ready, 'setup failed');
    const dir = mkdtempSync(join(tmpdir(), 'pb-engine-'));
    const serve = (path: string, reply: (socket: Socket) => void) =>
      new Promise<Server>((resolve) => {
        const server = createServer(reply);
        server.listen(path, () => resolve(server));
      });
    const servers = [
      await serve(join(dir, 'error.sock'), (c) => c.end('HTTP/1.0 500 Internal Server Error\r\n\r\n{}')),
      await serve(join(dir, 'silent.sock'), (c) => c.destroy()),
      await serve(join(dir, 'other.sock'), (c) => c.end('HTTP/1.0 200 OK\r\n\r\n{}')),
    ];
    try {
      const expected = await docker.inspect(running);
      for (const socket of ['error.sock', 'silent.sock', 'other.sock', 'absent.sock'])
        assert.equal(
          await new Docker('docker', createShell(), join(dir, socket)).inspectQuick(running),
          expected,
          socket,
        );
      // Without a socket (another engine configured), only the CLI is asked.
      await new Docker('/nonexistent/docker', createShell(), false).inspectQuick(running).then(
        () => assert.unreachable('answered without the CLI'),
        (error: Error) => assert.match(error.message, /nonexistent/),
      );
    } finally {
      for (const server of servers) server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

/** A container whose health check Docker first runs in 5 minutes: it stays "starting" for the test. */
const withSlowCheck = (name: string, check: string) =>
  runWith(name, ['--env', 'GAME_READY=yes', '--health-cmd', check, '--health-interval', '300s'], 'sleep', 'infinity');
const passing = scratchName('pb-probe-pass');
const failing = scratchName('pb-probe-fail');

inspect('health check commands as docker exec argv', () => {
  assert.equal(healthCheckArgv(['CMD', 'pg_isready', '-q']), ['pg_isready', '-q']);
  assert.equal(healthCheckArgv(['CMD-SHELL', 'curl -f http://localhost/ || exit 1']), [
    '/bin/sh',
    '-c',
    'curl -f http://localhost/ || exit 1',
  ]);
  assert.is(healthCheckArgv(['NONE']), undefined);
  assert.is(healthCheckArgv(undefined), undefined);
});

inspect(
  'probe: a starting container whose own check passes (in its environment) counts as healthy; one whose check fails never does',
  async () => {
    // The check reads the container's environment: the probe runs it as Docker would.
    withSlowCheck(passing, 'test "$GAME_READY" = yes');
    withSlowCheck(failing, 'test "$GAME_READY" = no');
    const state = await docker.inspect(passing);
    assert.is(state.health, 'starting');
    assert.equal(state.healthCheck?.test, ['CMD-SHELL', 'test "$GAME_READY" = yes']);
    // The test image's HEALTHCHECK sets the timeout; --health-cmd replaces only the command.
    const timeout = execFileSync('docker', ['inspect', '-f', '{{json .Config.Healthcheck.Timeout}}', passing])
      .toString()
      .trim();
    assert.is(state.healthCheck?.timeoutMs, Number(timeout) / 1e6 || 30_000);
    // Without the probe, Docker's verdict is 5 minutes away.
    await docker.waitHealthy([passing], 2_000).then(
      () => assert.unreachable('waitHealthy returned before Docker ran the check'),
      (error: Error) => assert.match(error.message, /did not become healthy within 2 s: .*\(starting\)/),
    );
    const started = Date.now();
    await docker.waitHealthy([passing], 60_000, { probe: true });
    assert.ok(Date.now() - started < 30_000, 'the probe waited for Docker');
    assert.is((await docker.inspect(passing)).health, 'starting', "Docker's own check has not run yet");
    await docker.waitHealthy([passing, failing], 3_000, { probe: true }).then(
      () => assert.unreachable('a failing check passed'),
      (error: Error) =>
        assert.match(
          error.message,
          new RegExp(`did not become healthy within 3 s: ${failing} \\(starting\\)$`),
          error.message,
        ),
    );
  },
);

const oneShot = scratchName('pb-probe-oneshot');

inspect('probe: a one-shot is probed like the others while it runs, and is done once it exits 0', async () => {
  // Its check (the image's, meant for another service) passes at once; it exits 0 after 3 s,
  // and Docker then calls it "unhealthy": a one-shot that exited 0 is done all the same.
  runWith(oneShot, ['--health-cmd', 'true', '--health-interval', '300s'], 'sleep', '3');
  const started = Date.now();
  await docker.waitHealthy([oneShot], 60_000, { probe: true, oneShot: [oneShot] });
  assert.ok(Date.now() - started < 2_500, 'the probe did not count while it ran');
  execFileSync('docker', ['wait', oneShot]);
  await docker.waitHealthy([oneShot], 5_000, { probe: true, oneShot: [oneShot] });
  // Not named a one-shot, the same exited container fails the wait.
  await docker.waitHealthy([oneShot], 5_000, { probe: true }).then(
    () => assert.unreachable('an exited container passed'),
    (error: Error) => assert.match(error.message, new RegExp(`container '${oneShot}' is (exited|unhealthy)`)),
  );
});

inspect.after(async () => {
  await Promise.all([removeDb(running), removeDb(exited), removeDb(passing), removeDb(failing), removeDb(oneShot)]);
});

inspect.run();
