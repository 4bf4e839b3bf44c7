import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { nextRuns, scheduleProblem } from '../lib/schedule.ts';

const schedule = suite('scheduleProblem');
schedule('accepts classic crontab expressions', () => {
  for (const ok of ['0 2,10,18 * * *', '*/5 * * * *', '0 4 * * 0', '0 4 * * sun', '30 1 1-7 jan,jul mon-fri']) {
    assert.is(scheduleProblem(ok), undefined, ok);
  }
});
schedule('refuses what cron would not run', () => {
  assert.match(scheduleProblem('61 * * * *')!, /minute/);
  assert.match(scheduleProblem('every day')!, /exactly 5 fields/);
  assert.match(scheduleProblem('0 0 * * * *')!, /exactly 5 fields.*this has 6/);
  assert.match(scheduleProblem('')!, /this has 0/);
  assert.match(scheduleProblem('0 0 L * *')!, /day of month/);
  assert.match(scheduleProblem('0 25 * * *')!, /hour/);
});
schedule('nextRuns gives the 8-hourly default in order', () => {
  const from = new Date(2023, 11, 1, 3, 0, 0);
  const runs = nextRuns('0 2,10,18 * * *', 3, from).map((d) => [d.getDate(), d.getHours(), d.getMinutes()]);
  assert.equal(runs, [
    [1, 10, 0],
    [1, 18, 0],
    [2, 2, 0],
  ]);
});
schedule.run();
