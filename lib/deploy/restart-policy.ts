// A slot that stops serving is kept, stopped, for --rollback. Docker starts a stopped container
// again when the daemon starts (a NAS reboot, a Container Station update) if its restart policy is
// `always`: the retired slot would then run beside the live one, its writers taking the game's
// ports or writing into the old database. So after each switch the retired slot's containers get
// the policy `no`, and the one each had is kept in deploy/restart-policies.json (by container ID)
// until a rollback makes that slot live again and gives it back.
import { errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Shell } from '../host/shell.ts';
import { journalFile } from './journal-file.ts';
import { inspectContainers } from './journal.ts';

/** Container ID to the restart policy it had while its slot served (`always`, `on-failure:3`...). */
type Policies = Record<string, string>;

const file = journalFile<Policies>({
  fileName: 'restart-policies.json',
  title: 'the restart policies of the retired slots',
  records: 'the restart policy each stopped slot container had while it served',
  valid: (value) => Object.values(value as object).every((policy) => typeof policy === 'string'),
  repair:
    "Set each live container's policy by hand (docker update --restart=POLICY NAME, as the compose file says), then remove the file.",
});

interface PolicyContext {
  dir: string;
  docker: string;
  $: Shell;
  log: Logger;
}

/**
 * After a switch: the `retired` containers (the slot that stopped serving) get the policy `no`,
 * theirs recorded first; the `live` ones get back a policy recorded when their slot was retired.
 * Repeating it is harmless (a reconciliation runs it again). Failures only warn: the switch stands.
 */
export async function settleRestartPolicies(ctx: PolicyContext, live: string[], retired: string[]): Promise<void> {
  try {
    const policies: Policies = file.read(ctx.dir) ?? {};
    // The recorded ones too: a record whose container is gone (its slot removed) is dropped.
    const facts = await inspectContainers(ctx.$, ctx.docker, [
      ...new Set([...live, ...retired, ...Object.keys(policies)]),
    ]);
    const current = new Map([...facts.values()].map((f) => [f.id, f.restart]));
    const idOf = (ref: string) => facts.get(ref)?.id ?? ref;
    const toRetire = retired.map(idOf).filter((id) => current.has(id) && current.get(id) !== 'no');
    for (const id of toRetire) policies[id] = current.get(id)!;
    // Recorded before any policy changes: a run killed in between loses none.
    if (toRetire.length) file.write(ctx.dir, policies);
    if (toRetire.length) await ctx.$({ timeout: '30s' })`${ctx.docker} update --restart=no ${toRetire}`;
    for (const id of live.map(idOf)) {
      const policy = policies[id];
      if (policy === undefined) continue;
      if (current.get(id) !== policy) await ctx.$({ timeout: '30s' })`${ctx.docker} update --restart=${policy} ${id}`;
      delete policies[id];
    }
    for (const id of Object.keys(policies)) if (!current.has(id)) delete policies[id];
    if (Object.keys(policies).length) file.write(ctx.dir, policies);
    else file.remove(ctx.dir);
  } catch (error) {
    ctx.log.warn(`Could not set the restart policies after the switch: ${errorText(error)}`);
  }
}
