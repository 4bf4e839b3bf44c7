// The workstation's deploy-to-qnap forwards to the NAS-side run every flag that concerns it: a
// setting added to the command but not forwarded would be silently ignored on the NAS.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { forwardedArgs, workstationSettings } from '../lib/commands/deploy-to-qnap.ts';
import { settingSpec } from '../lib/settings.ts';
import { deployToQnap } from '../scripts/deploy-to-qnap.ts';

test('every setting of deploy-to-qnap reaches the NAS-side run, except the workstation-only ones', () => {
  const settings = deployToQnap.spec.settings;
  assert.ok(settings.includes('replicationStall'));
  for (const key of settings) {
    const flag = settingSpec(key).flag;
    if (!flag) continue;
    const args = forwardedArgs({ [flag]: '7' });
    if (workstationSettings.includes(key)) assert.equal(args, [], `--${flag} stays on the workstation`);
    else assert.equal(args, [`--${flag}`, '7'], `--${flag} is forwarded`);
  }
});

test('the replication stall limit is forwarded with its value; switches without one', () => {
  assert.equal(forwardedArgs({ 'replication-stall': '30', offline: true, json: false }), [
    '--offline',
    '--replication-stall',
    '30',
  ]);
});

test.run();
