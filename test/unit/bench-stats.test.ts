import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatRate, formatRatio, formatSeconds, perSecond, ratio, summarize } from '../../bench/stats.js';

describe('bench statistics', () => {
  it('summarizes an odd number of runs by the middle one', () => {
    assert.deepEqual(summarize([0.3, 0.1, 0.2]), { min: 0.1, median: 0.2, max: 0.3, runs: 3 });
  });

  it('summarizes an even number of runs by the mean of the middle two', () => {
    assert.deepEqual(summarize([4, 1, 3, 2]), { min: 1, median: 2.5, max: 4, runs: 4 });
  });

  it('does not reorder the samples it was given', () => {
    const samples = [3, 1, 2];
    summarize(samples);
    assert.deepEqual(samples, [3, 1, 2]);
  });

  it('refuses no samples and non-finite samples', () => {
    assert.throws(() => summarize([]), RangeError);
    assert.throws(() => summarize([1, Number.NaN]), /not a finite number/);
    assert.throws(() => summarize([Number.POSITIVE_INFINITY]), RangeError);
  });

  it('computes throughput only when there is something to divide', () => {
    assert.equal(perSecond(200e6, 2), 100e6);
    assert.equal(perSecond(undefined, 2), undefined);
    assert.equal(perSecond(0, 2), undefined);
    assert.equal(perSecond(10, 0), undefined);
  });

  it('computes ratios against a reference, none against a missing one', () => {
    assert.equal(ratio(3, 2), 1.5);
    assert.equal(ratio(1, 4), 0.25);
    assert.equal(ratio(1, undefined), undefined);
    assert.equal(ratio(1, 0), undefined);
  });

  it('formats ratios, durations and rates readably', () => {
    assert.equal(formatRatio(1.234), '1.23×');
    assert.equal(formatRatio(0.5), '0.50×');
    assert.equal(formatRatio(12.34), '12.3×');
    assert.equal(formatRatio(123.4), '123×');
    assert.equal(formatRatio(undefined), '–');
    assert.equal(formatSeconds(0.00085), '850 µs');
    assert.equal(formatSeconds(0.00512), '5.12 ms');
    assert.equal(formatSeconds(0.0512), '51.2 ms');
    assert.equal(formatSeconds(0.512), '512 ms');
    assert.equal(formatSeconds(4.567), '4.57 s');
    assert.equal(formatRate(248e6, 'MB'), '248 MB/s');
    assert.equal(formatRate(12.34e6, 'MB'), '12.3 MB/s');
    assert.equal(formatRate(12345.6, 'files'), '12,346 files/s');
    assert.equal(formatRate(undefined, 'files'), '–');
  });
});
