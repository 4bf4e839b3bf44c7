// The deployment plan's phase runner: phases run alongside each other start together, end
// together, and fail with the first failure in plan order only after every one has settled.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { alongside, type Phase } from '../lib/deploy/run-plan.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A phase that records when it started and ended, and fails with `error` after `ms` if given one. */
function timed(name: string, ms: number, events: string[], error?: Error): Phase {
  return {
    name,
    describe: `${name} things`,
    run: async () => {
      events.push(`${name} started`);
      await sleep(ms);
      events.push(`${name} ended`);
      if (error) throw error;
    },
  };
}

const plan = suite('deploy plan: phases alongside each other');

plan('the name and description join both; both start before either ends', async () => {
  const events: string[] = [];
  const both = alongside(timed('start', 40, events), timed('detach', 10, events));
  assert.is(both.name, 'start + detach');
  assert.is(both.describe, 'start things; at the same time, detach things');
  await both.run();
  assert.equal(events, ['start started', 'detach started', 'detach ended', 'start ended']);
});

plan('a failure is thrown only once every phase has settled, the first in plan order', async () => {
  const events: string[] = [];
  const both = alongside(
    timed('start', 40, events, new Error('start failed')),
    timed('detach', 5, events, new Error('detach failed')),
    timed('slow', 60, events),
  );
  try {
    await both.run();
    assert.unreachable('it did not fail');
  } catch (error) {
    assert.instance(error, Error);
    assert.is((error as Error).message, 'start failed');
  }
  assert.equal(events.at(-1), 'slow ended');
  assert.is(events.length, 6);
});

plan.run();
