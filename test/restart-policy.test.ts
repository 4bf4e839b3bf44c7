// The restart policy a retired slot gives up and gets back (lib/deploy/restart-policy.ts, read by journal.ts); the
// policies themselves are checked on real containers in deploy-safety.e2e.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { restartValue } from '../lib/deploy/journal.ts';

test('an inspected restart policy as docker update --restart takes it back', () => {
  assert.is(restartValue('always', 0), 'always');
  assert.is(restartValue('unless-stopped', 0), 'unless-stopped');
  assert.is(restartValue('on-failure', 3), 'on-failure:3');
  assert.is(restartValue('on-failure', 0), 'on-failure');
  // Docker reports no policy as an empty name.
  assert.is(restartValue('', 0), 'no');
  assert.is(restartValue('no', 0), 'no');
});

test.run();
