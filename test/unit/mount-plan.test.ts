/**
 * The overlay mount decisions as pure functions, with made-up kernels (issue 15 part 4):
 * decideOverlaySettings (index, userxattr, redirect_dir, metacopy, nativeDiff, the new mount API)
 * and planOverlayMount (absolute → relative l/ → lowerdir+ by the page size, or UNSUPPORTED), the
 * plan the mount carries out and `mount --explain` shows; and doctor's per-method depth limits,
 * which ask the same planner. The real mounts these predict: test/integration/doctor.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { overlay2MethodLimits } from '../../src/drivers/doctor.js';
import { decideOverlaySettings, planOverlayMount, type OverlayKernelFacts, type UnionPaths } from '../../src/drivers/overlayfs/mount.js';

const kernel: OverlayKernelFacts = {
  params: { index: false, redirectDir: false, metacopy: false, xino: 'N', hasIndexParam: true },
  inUserNamespace: false,
  pageSize: 4096,
  lowerdirPlus: true,
};

function chain(n: number): UnionPaths {
  return { lowers: Array.from({ length: n }, (_, i) => `l/${String(i).padStart(26, 'L')}`), upper: 'top/diff', work: 'top/work' };
}

const decision = (s: { decisions: Array<{ name: string; value: string; why: string }> }, name: string) => {
  const d = s.decisions.find((x) => x.name === name);
  assert.ok(d !== undefined, `a ${name} decision`);
  assert.ok(d.why.length > 0, `${name} says why`);
  return d.value;
};

describe('decideOverlaySettings', () => {
  it('index=off where the module has the parameter, nothing where it has none', () => {
    const s = decideOverlaySettings(kernel);
    assert.equal(s.indexOff, true);
    assert.equal(decision(s, 'index'), 'off');
    const old = decideOverlaySettings({ ...kernel, params: { hasIndexParam: false } });
    assert.equal(old.indexOff, false);
    assert.equal(decision(old, 'index'), 'not set');
  });

  it('userxattr in a user namespace, which also ends native diffs', () => {
    const s = decideOverlaySettings({ ...kernel, inUserNamespace: true });
    assert.equal(s.userxattr, true);
    assert.equal(decision(s, 'userxattr'), 'on');
    assert.equal(s.nativeDiff, false);
    assert.equal(decideOverlaySettings(kernel).nativeDiff, true);
  });

  it('redirect_dir on (Y or "on") and metacopy Y end native diffs; "follow" does not', () => {
    const with_ = (params: Partial<OverlayKernelFacts['params']>) =>
      decideOverlaySettings({ ...kernel, params: { ...kernel.params, ...params } });
    assert.equal(with_({ redirectDir: true }).nativeDiff, false);
    assert.equal(with_({ redirectDir: 'on' }).nativeDiff, false);
    assert.equal(with_({ redirectDir: 'follow' }).nativeDiff, true);
    assert.equal(decision(with_({ redirectDir: 'follow' }), 'redirect_dir'), 'module default (follow)');
    const meta = with_({ metacopy: true });
    assert.equal(meta.nativeDiff, false);
    assert.equal(meta.metacopy, true);
    assert.equal(decision(meta, 'metacopy'), 'module default (Y)');
  });

  it('the new mount API only where lowerdir+ works and the driver wants it', () => {
    assert.equal(decideOverlaySettings(kernel).newMountApi, true);
    assert.equal(decideOverlaySettings({ ...kernel, lowerdirPlus: false }).newMountApi, false);
    assert.equal(decideOverlaySettings(kernel, false).newMountApi, false);
  });
});

describe('planOverlayMount', () => {
  const home = '/var/lib/unionctl/overlay2';
  const settings = decideOverlaySettings(kernel);

  it('absolute paths while they fit a page, with the bytes counted NUL included', () => {
    const plan = planOverlayMount(home, `${home}/top/merged`, chain(2), settings);
    assert.equal(plan.method, 'absolute');
    assert.equal(plan.data.length, 1);
    assert.match(plan.data[0]!, /^index=off,lowerdir=\/var\/lib\/unionctl\/overlay2\/l\/L+0:/);
    assert.equal(plan.dataBytes, Buffer.byteLength(plan.data[0]!) + 1);
    assert.equal(plan.cwd, undefined);
    assert.equal(decision(plan, 'method'), 'absolute');
    for (const name of ['index', 'userxattr', 'redirect_dir', 'metacopy']) decision(plan, name);
  });

  it('relative l/ paths from the home once absolute ones pass the page, lowerdir+ once those do too', () => {
    let n = 1;
    while (planOverlayMount(home, '/t', chain(n + 1), settings).method === 'absolute') n++;
    const relative = planOverlayMount(home, '/t', chain(n + 1), settings);
    assert.equal(relative.method, 'relative');
    assert.equal(relative.cwd, home);
    assert.ok(!relative.data[0]!.includes(home), 'relative data names no absolute path');
    assert.ok(Buffer.byteLength(planOverlayMount(home, '/t', chain(n), settings).data[0]!) + 1 <= 4096);
    while (planOverlayMount(home, '/t', chain(n + 1), settings).method !== 'new-api') n++;
    const deep = planOverlayMount(home, '/t', chain(n + 1), settings);
    assert.equal(deep.data.filter((d) => d.startsWith('lowerdir+=/var/lib/unionctl/overlay2/l/')).length, n + 1);
    assert.deepEqual(deep.data.slice(0, 2), ['source=overlay', 'index=off']);
    assert.deepEqual(deep.data.slice(-2), [`upperdir=${home}/top/diff`, `workdir=${home}/top/work`]);
  });

  it('a smaller page moves the switch; no new mount API makes the deepest chains UNSUPPORTED', () => {
    const small = { ...settings, pageSize: 512 };
    assert.equal(planOverlayMount(home, '/t', chain(10), small).method, 'relative');
    assert.equal(planOverlayMount(home, '/t', chain(10), settings).method, 'absolute');
    assert.throws(() => planOverlayMount(home, '/t', chain(200), { ...settings, newMountApi: false }), { code: 'UNSUPPORTED' });
  });

  it('userxattr and the label go into the data; new-api takes the label unquoted', () => {
    const s = { ...decideOverlaySettings({ ...kernel, inUserNamespace: true }), mountLabel: 'system_u:object_r:x:s0' };
    assert.match(planOverlayMount(home, '/t', chain(1), s).data[0]!, /^index=off,userxattr,lowerdir=.*,context="system_u:object_r:x:s0"$/);
    const deep = planOverlayMount(home, '/t', chain(300), s);
    assert.ok(deep.data.includes('userxattr'));
    assert.equal(deep.data.at(-1), 'context=system_u:object_r:x:s0');
  });
});

describe("doctor's depth limits per method", () => {
  it('are where planOverlayMount switches method', () => {
    const home = '/var/lib/unionctl/overlay2';
    const settings = decideOverlaySettings(kernel);
    const limits = overlay2MethodLimits(home, settings, 500);
    assert.ok(limits.absolute! < limits.relative! && limits.relative! < limits['new-api']!);
    assert.equal(limits['new-api'], 500);
    const noNewApi = overlay2MethodLimits(home, { ...settings, newMountApi: false }, 500);
    assert.equal(noNewApi['new-api'], undefined);
    assert.equal(noNewApi.relative, limits.relative);
  });
});
