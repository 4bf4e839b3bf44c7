import { existsSync, lstatSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  fsPlaceCalls,
  placeNoReplace,
  writeFileAtomic,
  writeNewFile,
  type PlaceCalls,
} from '../lib/host/atomic-file.ts';
import { makeTempDir, removeTempDir } from './helpers/tmp.ts';

let dir = '';
const each = (s: ReturnType<typeof suite>) => {
  s.before.each(() => {
    dir = makeTempDir();
  });
  s.after.each(() => removeTempDir(dir));
};

const atomic = suite('writeFileAtomic');
each(atomic);

atomic('a symlink planted at the target is replaced, never written through; the victim keeps its content', () => {
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'precious');
  symlinkSync(victim, join(dir, 'status.json'));
  writeFileAtomic(join(dir, 'status.json'), '{"ok":true}\n');
  assert.is(readFileSync(victim, 'utf8'), 'precious');
  assert.not.ok(lstatSync(join(dir, 'status.json')).isSymbolicLink());
  assert.is(readFileSync(join(dir, 'status.json'), 'utf8'), '{"ok":true}\n');
});

atomic(
  'the temp name is unguessable: a symlink at the old pid-only name is not followed, and no temp file stays',
  () => {
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious');
    symlinkSync(victim, join(dir, `.state.tmp-${process.pid}`));
    writeFileAtomic(join(dir, 'state'), '7\n');
    assert.is(readFileSync(victim, 'utf8'), 'precious');
    assert.equal(readdirSync(dir).sort(), [`.state.tmp-${process.pid}`, 'state', 'victim']);
  },
);

atomic('writeNewFile refuses an existing name and a symlink (O_EXCL, O_NOFOLLOW)', () => {
  writeFileSync(join(dir, 'taken'), 'x');
  symlinkSync(join(dir, 'nowhere'), join(dir, 'link'));
  assert.throws(() => writeNewFile(join(dir, 'taken'), 'y'), /EEXIST/);
  assert.throws(() => writeNewFile(join(dir, 'link'), 'y'), /EEXIST/);
  assert.not.ok(existsSync(join(dir, 'nowhere')));
});
atomic.run();

const place = suite('placeNoReplace');
each(place);

/** The real calls, except link(), which fails as on exFAT, FAT and some SMB mounts. */
const withoutHardLinks = (code: string): PlaceCalls => ({
  ...fsPlaceCalls,
  link: () => {
    throw Object.assign(new Error(`${code}: operation not permitted, link`), { code });
  },
});

for (const [name, calls] of [
  ['with hard links', fsPlaceCalls],
  ['without hard links (link fails EPERM)', withoutHardLinks('EPERM')],
  ['without hard links (link fails EOPNOTSUPP)', withoutHardLinks('EOPNOTSUPP')],
] as const) {
  place(`${name}: places a file under a free name, and never replaces a taken one`, () => {
    writeFileSync(join(dir, 'temp'), 'new backup');
    writeFileSync(join(dir, 'taken'), 'older backup');
    assert.is(placeNoReplace(join(dir, 'temp'), join(dir, 'taken'), calls), false);
    assert.is(readFileSync(join(dir, 'taken'), 'utf8'), 'older backup');
    assert.is(readFileSync(join(dir, 'temp'), 'utf8'), 'new backup', 'the temp file stays for the next name');
    symlinkSync(join(dir, 'victim'), join(dir, 'dangling'));
    assert.is(placeNoReplace(join(dir, 'temp'), join(dir, 'dangling'), calls), false);
    assert.not.ok(existsSync(join(dir, 'victim')));
    assert.is(placeNoReplace(join(dir, 'temp'), join(dir, 'free'), calls), true);
    assert.is(readFileSync(join(dir, 'free'), 'utf8'), 'new backup');
    assert.not.ok(existsSync(join(dir, 'temp')));
  });
}

place('another link() error is not mistaken for a missing feature', () => {
  writeFileSync(join(dir, 'temp'), 'x');
  assert.throws(() => placeNoReplace(join(dir, 'temp'), join(dir, 'free'), withoutHardLinks('EIO')), /EIO/);
  assert.not.ok(existsSync(join(dir, 'free')));
});
place.run();
