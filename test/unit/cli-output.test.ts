/**
 * How the CLI's tables show things (src/cli/output.ts): relative times, short ids, and tables cut
 * to the terminal's width.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { idShortener, printTable, timeAgo } from '../../src/cli/output.js';

const NOW = Date.parse('2026-12-07T12:00:00Z');

describe('timeAgo', () => {
  it("says how long ago, in docker's words", () => {
    const ago = (ms: number) => timeAgo(new Date(NOW - ms).toISOString(), NOW);
    assert.equal(ago(0), 'Less than a second ago');
    assert.equal(ago(1000), '1 second ago');
    assert.equal(ago(45_000), '45 seconds ago');
    assert.equal(ago(60_000), 'About a minute ago');
    assert.equal(ago(5 * 60_000), '5 minutes ago');
    assert.equal(ago(60 * 60_000), 'About an hour ago');
    assert.equal(ago(5 * 3600_000), '5 hours ago');
    assert.equal(ago(4 * 86400_000), '4 days ago');
    assert.equal(ago(20 * 86400_000), '2 weeks ago');
    assert.equal(ago(90 * 86400_000), '3 months ago');
    assert.equal(ago(3 * 365 * 86400_000), '3 years ago');
  });

  it('shows a time in the future as now, and an unreadable one as it is', () => {
    assert.equal(timeAgo(new Date(NOW + 5000).toISOString(), NOW), 'Less than a second ago');
    assert.equal(timeAgo('yesterday-ish', NOW), 'yesterday-ish');
  });
});

describe('idShortener', () => {
  const a = `${'ab12'.repeat(3)}${'0'.repeat(52)}`;
  const b = `${'cd34'.repeat(3)}${'1'.repeat(52)}`;
  const clash = `${'ab12'.repeat(3)}${'2'.repeat(52)}`;

  it('cuts generated ids to 12 characters, leaves chosen ones, and --no-trunc leaves all', () => {
    const shown = idShortener([a, b, 'web-server-frontend']);
    assert.deepEqual([shown(a), shown(b), shown('web-server-frontend')], [a.slice(0, 12), b.slice(0, 12), 'web-server-frontend']);
    const whole = idShortener([a, b], true);
    assert.equal(whole(a), a);
  });

  it('keeps whole the ids that would look alike when cut', () => {
    const shown = idShortener([a, b, clash]);
    assert.deepEqual([shown(a), shown(b), shown(clash)], [a, b.slice(0, 12), clash]);
  });
});

describe('printTable', () => {
  const saved = { columns: process.env.COLUMNS, write: process.stdout.write };
  afterEach(() => {
    if (saved.columns === undefined) delete process.env.COLUMNS;
    else process.env.COLUMNS = saved.columns;
    process.stdout.write = saved.write;
  });

  function printed(header: string[], rows: string[][]): string[] {
    let out = '';
    process.stdout.write = ((chunk: string) => {
      out += chunk;
      return true;
    }) as typeof process.stdout.write;
    try {
      printTable(header, rows);
    } finally {
      process.stdout.write = saved.write;
    }
    return out.split('\n').filter((l) => l !== '');
  }

  const rows = [['05db75965238', 'ro', `/var/lib/unionctl/driver-state/overlay2/read-only/mnt/${'e'.repeat(64)}`]];

  it('fits $COLUMNS on a pipe by cutting the widest cells, a path from its start', () => {
    process.env.COLUMNS = '60';
    const lines = printed(['LAYER', 'MODE', 'PATH'], rows);
    for (const l of lines) assert.ok(l.length <= 60, `${l.length} > 60: ${l}`);
    assert.match(lines[1]!, /^05db75965238 {2}ro {4}…e+$/);
  });

  it('prints whole cells without a width to fit', () => {
    delete process.env.COLUMNS;
    const lines = printed(['LAYER', 'MODE', 'PATH'], rows);
    assert.ok(lines[1]!.endsWith(rows[0]![2]!));
  });

  it('never cuts a cell below 12 characters: a table that cannot fit stays wider', () => {
    process.env.COLUMNS = '10';
    const lines = printed(['LAYER', 'MODE', 'PATH'], rows);
    assert.ok(lines[1]!.startsWith('05db75965238  ro'), lines[1]);
    assert.equal(lines[1]!.length, 12 + 2 + 4 + 2 + 12);
  });
});
