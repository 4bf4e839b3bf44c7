// The shape of lib/ that keeps it readable: a dozen shared modules at the top, one folder per
// concern, and imports that only go one way, between folders as between modules.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const lib = join(import.meta.dirname, '..', 'lib');

function modules(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return modules(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

/** Every relative import (static, dynamic or type-only) of a module, as module paths. */
function importsOf(path: string): string[] {
  const source = readFileSync(path, 'utf8');
  const specs = [...source.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+\.ts)'/g)].map((m) => m[1]!);
  return specs.map((spec) => normalize(join(dirname(path), spec)));
}

const folderOf = (path: string) => relative(lib, dirname(path)) || '.';

/** The first cycle found in a graph, or undefined. */
function cycleIn(graph: Map<string, Set<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const visit = (node: string, trail: string[]): string[] | undefined => {
    if (state.get(node) === 'open') return [...trail.slice(trail.indexOf(node)), node];
    if (state.get(node) === 'done') return undefined;
    state.set(node, 'open');
    for (const next of graph.get(node) ?? []) {
      const found = visit(next, [...trail, node]);
      if (found) return found;
    }
    state.set(node, 'done');
    return undefined;
  };
  for (const node of graph.keys()) {
    const found = visit(node, []);
    if (found) return found;
  }
  return undefined;
}

const all = modules(lib);

test('lib/ holds at most a dozen modules at its top level; the rest live in folders by concern', () => {
  const top = all.filter((path) => dirname(path) === lib);
  assert.ok(top.length <= 12, `${top.length} top-level modules: ${top.map((p) => relative(lib, p)).join(', ')}`);
  assert.ok(all.length > top.length * 3, 'most modules are in folders');
});

test('every relative import names a module that exists', () => {
  for (const path of all)
    for (const target of importsOf(path))
      assert.ok(all.includes(target), `${relative(lib, path)} imports ${relative(lib, target)}, which does not exist`);
});

test('no import cycle between modules', () => {
  const graph = new Map(all.map((path) => [path, new Set(importsOf(path))]));
  const cycle = cycleIn(graph);
  assert.is(cycle, undefined, `cycle: ${cycle?.map((p) => relative(lib, p)).join(' -> ')}`);
});

test('no import cycle between folders, and the top-level modules import no folder', () => {
  const graph = new Map<string, Set<string>>();
  for (const path of all)
    for (const target of importsOf(path)) {
      const [from, to] = [folderOf(path), folderOf(target)];
      if (from === to) continue;
      assert.ok(from !== '.', `the top-level ${relative(lib, path)} imports ${relative(lib, target)} from a folder`);
      graph.set(from, (graph.get(from) ?? new Set()).add(to));
    }
  const cycle = cycleIn(graph);
  assert.is(cycle, undefined, `folder cycle: ${cycle?.join(' -> ')}`);
});

test('the checks see a cycle when there is one', () => {
  const graph = new Map([
    ['a', new Set(['b'])],
    ['b', new Set(['c'])],
    ['c', new Set(['a'])],
  ]);
  assert.equal(cycleIn(graph), ['a', 'b', 'c', 'a']);
  assert.is(cycleIn(new Map([['a', new Set(['b'])]])), undefined);
});

test.run();
