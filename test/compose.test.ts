// readComposeServices: canonical names and Compose's start order (each service after what it
// depends on, in list or map form), which the deployment follows when it starts a new slot.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readComposeServices } from '../lib/compose.ts';

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
    assert.equal(services.map((s) => s.service), ['db', 'backend', 'frontend', 'worker']);
    assert.equal(services.map((s) => s.canonicalName), ['planetarion-db', 'planetarion-backend', 'planetarion-frontend', 'planetarion-worker']);
    assert.equal(services.find((s) => s.service === 'frontend')!.dependsOn, [{ service: 'backend', healthy: true }]);
    assert.equal(services.find((s) => s.service === 'backend')!.dependsOn, [{ service: 'db', healthy: false }]);
  } finally {
    rmSync(join(path, '..'), { recursive: true, force: true });
  }
});

test('a depends_on cycle and a missing database service are errors that name them', () => {
  const cycle = composeFile('services:\n  db: {image: p}\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n');
  const noDb = composeFile('services:\n  app: {image: x}\n');
  try {
    assert.throws(() => readComposeServices(cycle, 'db', 'planetarion-db', 'p'), /depends_on cycle through 'a'/);
    assert.throws(() => readComposeServices(noDb, 'db', 'planetarion-db', 'p'), /has no service 'db'[\s\S]*/);
  } finally {
    for (const p of [cycle, noDb]) rmSync(join(p, '..'), { recursive: true, force: true });
  }
});

test.run();
