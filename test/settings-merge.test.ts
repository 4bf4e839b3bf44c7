// planetarion.env on the NAS is merged, never overwritten: the plan for each pair of files, as data.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../lib/errors.ts';
import { describeSettingsPlan, planSettingsMerge, settingsRefusal } from '../lib/remote/settings-merge.ts';

const nas =
  "# the NAS's own settings\nPLANETARION_DB_CONTAINER=planetarion-db\nPLANETARION_AGE_RECIPIENTS=age1abc\nPLANETARION_KEEP=7\nAWS_SECRET_ACCESS_KEY=s3cr3t\n";
const path = '/share/CACHEDEV1_DATA/planetarion/planetarion.env';

const merge = suite('planSettingsMerge');
merge("no file on the NAS: the workstation's is put there as it is", () => {
  const plan = planSettingsMerge('PLANETARION_KEEP=3\n', undefined, false);
  assert.is(plan.action, 'create');
  assert.is(plan.text, 'PLANETARION_KEEP=3\n');
});
merge('keys only the NAS has are kept; the same values (quoted or not) change nothing', () => {
  const plan = planSettingsMerge(
    "PLANETARION_DB_CONTAINER='planetarion-db'\nPLANETARION_KEEP=7 # a week\n",
    nas,
    false,
  );
  assert.is(plan.action, 'same');
  assert.is(plan.text, nas);
  assert.equal(plan.nasOnly, ['PLANETARION_AGE_RECIPIENTS', 'AWS_SECRET_ACCESS_KEY']);
});
merge("new keys are appended to the NAS's file, every line of it kept byte for byte", () => {
  const plan = planSettingsMerge(
    'PLANETARION_DB_CONTAINER=planetarion-db\n# why\nPLANETARION_DRILL_SCHEDULE="0 5 * * 0"\n',
    nas.slice(0, -1),
    false,
  );
  assert.is(plan.action, 'merge');
  assert.is(
    plan.text,
    `${nas}# added by deploy-to-qnap from the workstation's planetarion.env\nPLANETARION_DRILL_SCHEDULE="0 5 * * 0"\n`,
  );
  assert.equal(plan.added, ['PLANETARION_DRILL_SCHEDULE']);
});
merge(
  'a changed key (the age recipients, PLANETARION_KEEP) is refused with the difference; secret values never shown',
  () => {
    const plan = planSettingsMerge(
      'PLANETARION_AGE_RECIPIENTS=age1other\nPLANETARION_KEEP=3\nAWS_SECRET_ACCESS_KEY=other\n',
      nas,
      false,
    );
    assert.is(plan.action, 'refuse');
    const error = settingsRefusal(plan, path);
    assert.instance(error, UsageError);
    assert.is(
      error.message,
      `the workstation's planetarion.env would change PLANETARION_AGE_RECIPIENTS, PLANETARION_KEEP, AWS_SECRET_ACCESS_KEY in ${path}; nothing was uploaded`,
    );
    const shown = describeSettingsPlan(plan, path).join('\n');
    assert.match(shown, '  PLANETARION_KEEP: on the NAS "7", here "3"');
    assert.match(shown, '  PLANETARION_AGE_RECIPIENTS: on the NAS "age1abc", here "age1other"');
    assert.match(shown, '  AWS_SECRET_ACCESS_KEY: on the NAS (a secret value), here (a secret value)');
    assert.match(shown, '  PLANETARION_DB_CONTAINER: only on the NAS (kept)');
    assert.not.match(shown + String(error.advice ?? ''), /s3cr3t|other\b(?!")/);
  },
);
merge("--replace-settings: the workstation's file as it is, what it drops said", () => {
  const plan = planSettingsMerge('PLANETARION_KEEP=3\n', nas, true);
  assert.is(plan.action, 'replace');
  assert.is(plan.text, 'PLANETARION_KEEP=3\n');
  assert.match(describeSettingsPlan(plan, path).join('\n'), '  PLANETARION_AGE_RECIPIENTS: only on the NAS (dropped)');
});
merge("a malformed file: exit 2 naming it (the NAS's one only matters without --replace-settings)", () => {
  assert.throws(
    () => planSettingsMerge('not a setting\n', nas, false),
    (e: unknown) => e instanceof UsageError && /the workstation's planetarion.env cannot be read/.test(e.message),
  );
  assert.throws(
    () => planSettingsMerge('PLANETARION_KEEP=3\n', 'garbage\n', false),
    (e: unknown) => e instanceof UsageError && /on the NAS/.test(e.message),
  );
  assert.is(planSettingsMerge('PLANETARION_KEEP=3\n', 'garbage\n', true).action, 'replace');
});
merge.run();
