/**
 * Docker's and containers/storage's tar-split (vbatts/tar-split JSON lines) read as unionctl's
 * record: segments become raw bytes, entries with content become file items, entries without
 * become name items (name_raw for a name that is not UTF-8), and the stream rebuilt from it and
 * the layer's files is the original tar. Damage is CORRUPT naming the line.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { parseTarSplitJson, readTarSplitJson, rebuildTarStream } from '../../src/archive/tar-split.js';
import { buildTar, padToBlock, tarHeader } from '../helpers/tarbuild.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const segment = (bytes: Buffer, position: number) => JSON.stringify({ type: 2, payload: bytes.toString('base64'), position });

describe('tar-split JSON (dockerd, containers/storage)', () => {
  it('converts item for item, and the rebuilt stream is the tar', async () => {
    const content = 'hello\n';
    const dirHeader = tarHeader({ name: 'etc/', type: 'dir' });
    const fileHeader = tarHeader({ name: 'etc/motd', content });
    const tar = buildTar([dirHeader, fileHeader, padToBlock(Buffer.from(content))]);
    // As dockerd writes it: the header segment, the entry (empty ones with "payload": null), padding and the end in segments.
    const lines = [
      segment(dirHeader, 0),
      JSON.stringify({ type: 1, name: 'etc/', payload: null, position: 1 }),
      segment(fileHeader, 2),
      JSON.stringify({ type: 1, name: 'etc/motd', size: content.length, payload: 'AAAAAAAAAAA=', position: 3 }),
      segment(tar.subarray(dirHeader.length + fileHeader.length + content.length), 4),
    ];
    const record = parseTarSplitJson(Buffer.from(`${lines.join('\n')}\n`), 'test');
    assert.deepEqual(
      record.items.map((i) =>
        i.kind === 'raw' ? `raw ${i.bytes.length}` : i.kind === 'file' ? `file ${i.name} ${i.size}` : `name ${i.name}`,
      ),
      ['raw 512', 'name etc/', 'raw 512', `file etc/motd ${content.length}`, `raw ${tar.length - 1024 - content.length}`],
    );
    assert.equal(record.totalBytes, tar.length);

    const dir = mkdtempSync(join(tmpdir(), 'unionctl-ts-json-'));
    try {
      mkdirSync(join(dir, 'layer', 'etc'), { recursive: true });
      writeFileSync(join(dir, 'layer', 'etc', 'motd'), content);
      const file = join(dir, 'tar-split.json.gz');
      writeFileSync(file, gzipSync(lines.join('\n')));
      const chunks: Buffer[] = [];
      for await (const c of rebuildTarStream(readTarSplitJson(file)!, join(dir, 'layer'))) chunks.push(c);
      assert.equal(sha256(Buffer.concat(chunks)), sha256(tar));
      assert.equal(readTarSplitJson(join(dir, 'none.gz')), undefined, 'no file: no record');
      writeFileSync(join(dir, 'plain'), 'not gzip');
      assert.throws(() => readTarSplitJson(join(dir, 'plain')), { code: 'CORRUPT', message: /not a gzip file/ });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a name that is not UTF-8 comes in name_raw', () => {
    const raw = Buffer.from('caf\u00e9', 'utf8').toString('base64');
    const record = parseTarSplitJson(Buffer.from(JSON.stringify({ type: 1, name_raw: raw, size: 3, position: 0 })), 'test');
    assert.deepEqual(record.items, [{ kind: 'file', name: 'café', size: 3 }]);
  });

  it('damage is CORRUPT naming the line', () => {
    for (const [text, message] of [
      ['{"type":2,"payload":"AA=="}\nnot json', /line 2 is not JSON/],
      ['{"type":2}', /line 1: a segment without a payload/],
      ['{"type":1,"size":3}', /line 1: an entry without a name or size/],
      ['{"type":1,"name":"a","size":-1}', /line 1: an entry without a name or size/],
      ['{"type":7}', /line 1: unknown entry type 7/],
    ] as const) {
      assert.throws(() => parseTarSplitJson(Buffer.from(text), 'layer x'), { code: 'CORRUPT', message }, text);
    }
  });
});
