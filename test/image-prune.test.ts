// Which images a removed slot leaves to remove: only the content tags this tool built, and only
// those no kept slot runs (the operator's own images may not be pullable on the NAS again).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { prunableImages, slotImages } from '../lib/deploy/image-prune.ts';
import { contentTag, isContentTag } from '../lib/deploy/service-images.ts';

const backendOld = contentTag('planetarion-backend', '0123456789abcdef');
const backendNew = contentTag('planetarion-backend', 'fedcba9876543210');
const frontend = contentTag('planetarion-frontend', '00112233445566aa');

test('content tags are recognised; the operator images are not', () => {
  assert.ok(isContentTag(backendOld));
  for (const image of [
    'postgres:15',
    'planetarion-backend:latest',
    'planetarion-backend:build-c0123456789abcdef',
    'registry.example/planetarion:c0123',
  ])
    assert.not.ok(isContentTag(image), image);
});

test('only the removed slot content tags that no kept slot runs', () => {
  assert.equal(
    prunableImages([backendOld, frontend, 'postgres:15', backendOld], [backendNew, frontend, 'postgres:15']),
    [backendOld],
  );
  assert.equal(prunableImages([backendOld], [backendOld]), []);
});

test('the images a slot file runs; none for a missing or broken file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pb-prune-'));
  try {
    const file = join(dir, 'slot.yml');
    writeFileSync(
      file,
      `services:\n  db:\n    image: postgres:15\n  backend:\n    image: ${backendOld}\n  worker:\n    build: ./src\n`,
    );
    assert.equal(slotImages(file), ['postgres:15', backendOld]);
    assert.equal(slotImages(join(dir, 'gone.yml')), []);
    writeFileSync(file, 'services: [');
    assert.equal(slotImages(file), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
