/**
 * UnionctlError across copies of errors.js: the bundled CLI and the modules it loads apart (the
 * bench runner) each have their own class, and `instanceof` must still hold between them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isUnionctlError, SysCallError, TarFormatError, UnionctlError } from '../../src/errors.js';

type ErrorsModule = typeof import('../../src/errors.js');

/** A second instance of the module (a query string makes the loader evaluate it again). */
async function secondCopy(): Promise<ErrorsModule> {
  return (await import(new URL('../../src/errors.js?second-copy', import.meta.url).href)) as ErrorsModule;
}

describe('UnionctlError', () => {
  it('is recognised when another copy of the module made it', async () => {
    const other = await secondCopy();
    assert.notEqual(other.UnionctlError, UnionctlError, 'a separate copy of the class');
    const foreign = new other.UnionctlError('USAGE', 'from the other copy');
    assert.ok(foreign instanceof UnionctlError);
    assert.ok(isUnionctlError(foreign));
    assert.ok(new other.SysCallError('open', 2, 'ENOENT', '/x') instanceof UnionctlError);
    assert.ok(new UnionctlError('USAGE', 'ours') instanceof other.UnionctlError);
  });

  it('subclasses still go by the prototype chain; other errors are not UnionctlErrors', () => {
    const sys = new SysCallError('open', 2, 'ENOENT', '/x');
    assert.ok(sys instanceof SysCallError && sys instanceof UnionctlError && sys instanceof Error);
    assert.equal(new UnionctlError('USAGE', 'plain') instanceof SysCallError, false);
    assert.equal(new TarFormatError('short') instanceof SysCallError, false);
    for (const other of [new Error('x'), { code: 'USAGE', message: 'look-alike' }, null, undefined, 'USAGE']) {
      assert.equal(other instanceof UnionctlError, false);
      assert.equal(isUnionctlError(other), false);
    }
  });
});
