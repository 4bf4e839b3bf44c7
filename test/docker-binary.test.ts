import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { dockerCandidates, locateDocker, qpkgInstallPath } from '../lib/host/docker-binary.ts';
import { UsageError } from '../lib/errors.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

const locate = suite('locateDocker');
let root = '';
locate.before.each(() => {
  root = makeTempDir();
});
locate.after.each(() => removeTempDir(root));

function fakeDocker(path: string): string {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, '#!/bin/sh\n');
  chmodSync(path, 0o755);
  return path;
}

locate('prefers PATH', () => {
  const onPath = fakeDocker(join(root, 'bin/docker'));
  assert.is(locateDocker({ env: { PATH: join(root, 'bin') }, root }), onPath);
});

locate("finds Container Station through QNAP's qpkg.conf when PATH lacks it (cron's PATH)", () => {
  mkdirSync(join(root, 'etc/config'), { recursive: true });
  writeFileSync(
    join(root, 'etc/config/qpkg.conf'),
    '[QcloudSSLCertificate]\nInstall_Path = /share/CACHEDEV1_DATA/.qpkg/QcloudSSLCertificate\n\n[container-station]\nName = container-station\nInstall_Path = /share/CACHEDEV2_DATA/.qpkg/container-station\n',
  );
  const cs = fakeDocker(join(root, 'share/CACHEDEV2_DATA/.qpkg/container-station/bin/docker'));
  assert.is(locateDocker({ env: { PATH: '/nonexistent' }, root }), cs);
});

locate('falls back to /share/*/.qpkg/container-station/bin/docker', () => {
  const cs = fakeDocker(join(root, 'share/CACHEDEV1_DATA/.qpkg/container-station/bin/docker'));
  assert.is(locateDocker({ env: { PATH: '' }, root }), cs);
});

locate('a DOCKER that is not executable is a usage error naming it', () => {
  writeFileSync(join(root, 'docker'), '');
  try {
    locateDocker({ explicit: join(root, 'docker'), root });
    assert.unreachable();
  } catch (error) {
    assert.instance(error, UsageError);
    assert.match((error as Error).message, `DOCKER '${join(root, 'docker')}' is not an executable`);
  }
});

locate('nothing found: a usage error listing where it looked', () => {
  try {
    locateDocker({ env: { PATH: '/nonexistent' }, root });
    assert.unreachable();
  } catch (error) {
    assert.instance(error, UsageError);
    assert.match((error as UsageError).advice ?? '', '/nonexistent/docker');
    assert.match((error as UsageError).advice ?? '', 'DOCKER=');
  }
});

locate('qpkgInstallPath reads only the named section', () => {
  assert.is(
    qpkgInstallPath('[a]\nInstall_Path = /x\n[container-station]\n Install_Path=/y \n', 'container-station'),
    '/y',
  );
  assert.is(qpkgInstallPath('[a]\nInstall_Path = /x\n', 'container-station'), undefined);
  assert.ok(
    dockerCandidates({ env: { PATH: '/a:/b' }, root: '/nope' })
      .slice(0, 2)
      .join() === '/a/docker,/b/docker',
  );
});
locate.run();
