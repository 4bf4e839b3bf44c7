// Which engine socket the backup's quick inspect may ask (the one the docker CLI would use, or
// none), and how the engine's answer is read: anything unexpected means "ask the CLI".
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultEngineSocket, engineSocket, engineSocketFor, parseInspectAnswer } from '../lib/host/engine-socket.ts';

test('the socket the CLI would use: the default, DOCKER_HOST unix://, or none for another engine', () => {
  assert.is(engineSocketFor({}, undefined), defaultEngineSocket);
  assert.is(
    engineSocketFor({ DOCKER_HOST: 'unix:///run/user/1000/docker.sock' }, undefined),
    '/run/user/1000/docker.sock',
  );
  assert.is(engineSocketFor({ DOCKER_HOST: 'tcp://127.0.0.1:2375' }, undefined), undefined);
  assert.is(engineSocketFor({ DOCKER_HOST: 'ssh://nas' }, undefined), undefined);
  assert.is(engineSocketFor({ DOCKER_CONTEXT: 'nas' }, undefined), undefined);
  assert.is(engineSocketFor({ DOCKER_CONTEXT: 'default' }, undefined), defaultEngineSocket);
});

test('a docker binary under another name (a wrapper) gets no socket: it may talk to another engine', () => {
  const env = { DOCKER_CONFIG: '/nonexistent' };
  assert.is(engineSocket('/share/CACHEDEV1_DATA/.qpkg/container-station/bin/docker', env), defaultEngineSocket);
  assert.is(engineSocket('docker', env), defaultEngineSocket);
  assert.is(engineSocket('/tmp/hooks/docker-hook.sh', env), undefined);
});

test("the CLI's config file: a current context other than default means none; one that does not parse, none", () => {
  assert.is(engineSocketFor({}, '{"auths": {}}'), defaultEngineSocket);
  assert.is(engineSocketFor({}, '{"currentContext": "default"}'), defaultEngineSocket);
  assert.is(engineSocketFor({}, '{"currentContext": "rootless"}'), undefined);
  assert.is(engineSocketFor({}, '{not json'), undefined);
  // DOCKER_HOST wins over the config's context, as it does for the CLI.
  assert.is(engineSocketFor({ DOCKER_HOST: 'unix:///x.sock' }, '{"currentContext": "rootless"}'), '/x.sock');
});

test('the answer: 200 with a JSON object is taken, 404 is "no such container", anything else is undefined', () => {
  const head = 'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n';
  assert.equal(parseInspectAnswer(`${head}{"Id": "abc", "State": {"Running": true}, "Config": {}}`), {
    Id: 'abc',
    State: { Running: true },
    Config: {},
  });
  assert.is(parseInspectAnswer('HTTP/1.0 404 Not Found\r\n\r\n{"message": "No such container: x"}'), null);
  assert.is(parseInspectAnswer('HTTP/1.0 500 Internal Server Error\r\n\r\n{}'), undefined);
  assert.is(parseInspectAnswer(`${head}{"Id": "abc"`), undefined);
  // A 200 that is not a container's (a proxy, another API): never taken.
  assert.is(parseInspectAnswer(`${head}{}`), undefined);
  assert.is(parseInspectAnswer(`${head}{"Id": "abc", "State": {"Running": "yes"}, "Config": {}}`), undefined);
  assert.is(parseInspectAnswer(`${head}{"Id": "abc", "State": {"Running": true}}`), undefined);
  assert.is(parseInspectAnswer(`${head}null`), undefined);
  assert.is(parseInspectAnswer('HTTP/1.0 200 OK\r\n'), undefined);
  assert.is(parseInspectAnswer(''), undefined);
});

test.run();
