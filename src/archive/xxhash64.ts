/**
 * XXH64, streaming: the hash a zstd frame's optional content checksum is made of (RFC 8878
 * §3.1.1: the low 4 bytes of XXH64 of the frame's decompressed content, seed 0, little-endian).
 * The algorithm is the one of Yann Collet's xxHash specification (doc/xxhash_spec.md, XXH64).
 *
 *   const h = new Xxh64();
 *   h.update(a); h.update(b);
 *   h.digestLow32();   // what a zstd frame stores; digest() gives all 64 bits
 *
 * The bulk of the work, the 32-byte stripes, runs in a 150-byte WebAssembly function built below
 * (64-bit multiplies are native there: ~3 GB/s, where 64-bit arithmetic on pairs of 32-bit halves
 * in JavaScript made ~110 MB/s, a quarter of a zstd import's time). Its state is four 64-bit
 * accumulators; each Xxh64 keeps its own and lends them to the function for a call, so any number
 * of hashes may be open at once. The start and the end of a hash (the accumulators' seeds, the
 * last < 32 bytes, the avalanche) happen once per hash and are BigInt arithmetic here.
 */

const MASK = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;

const STRIPE = 32;

const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & MASK;
/** round(acc, input) = rotl(acc + input * P2, 31) * P1 */
const round = (acc: bigint, input: bigint): bigint => (rotl((acc + input * P2) & MASK, 31n) * P1) & MASK;
/** mergeRound(acc, val) = (acc ^ round(0, val)) * P1 + P4 */
const mergeRound = (acc: bigint, val: bigint): bigint => ((acc ^ round(0n, val)) * P1 + P4) & MASK;

// ---------------------------------------------------------------------------------------------
// The stripe loop, in WebAssembly
// ---------------------------------------------------------------------------------------------

/*
 * (module
 *   (memory (export "m") 3)                 ;; [0, 32): the four accumulators; [32, …): input
 *   (func (export "s") (param $p i32) (param $end i32) (local $v1 i64) … (local $v4 i64)
 *     (local.set $v1 (i64.load offset=0 (i32.const 0)))   … $v4 at offset=24
 *     (block (loop
 *       (br_if 1 (i32.ge_u (local.get $p) (local.get $end)))
 *       (local.set $v1 (i64.mul (i64.rotl (i64.add (local.get $v1)
 *           (i64.mul (i64.load offset=0 (local.get $p)) (i64.const P2))) (i64.const 31)) (i64.const P1)))
 *       … $v2, $v3, $v4 with the lanes at offset=8, 16, 24
 *       (local.set $p (i32.add (local.get $p) (i32.const 32)))
 *       (br 0)))
 *     (i64.store offset=0 (i32.const 0) (local.get $v1))   … $v4 at offset=24
 * ))
 */

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 of a 64-bit constant (given unsigned; i64.const reads it as two's complement). */
function sleb64(value: bigint): number[] {
  let x = BigInt.asIntN(64, value);
  const out: number[] = [];
  for (;;) {
    const byte = Number(x & 0x7fn);
    x >>= 7n;
    const done = (x === 0n && (byte & 0x40) === 0) || (x === -1n && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];
const exportName = (s: string): number[] => [...uleb(s.length), ...Buffer.from(s, 'latin1')];

/** Memory pages (64 KiB each) of the module: the accumulators, then up to INPUT_MAX bytes of input. */
const PAGES = 3;
const INPUT_AT = 32;
const INPUT_MAX = PAGES * 65536 - INPUT_AT; // a multiple of STRIPE

function stripeModuleBytes(): Uint8Array<ArrayBuffer> {
  const op = { i32Const: 0x41, i64Const: 0x42, i64Load: 0x29, i64Store: 0x37, get: 0x20, set: 0x21 } as const;
  const [block, loop, brIf, br, end, noResult] = [0x02, 0x03, 0x0d, 0x0c, 0x0b, 0x40];
  const [i32GeU, i32Add, i64Add, i64Mul, i64Rotl] = [0x4f, 0x6a, 0x7c, 0x7e, 0x89];
  const alignment = 3; // 2^3 = 8 bytes, a hint only
  const p = 0;
  const lastByte = 1;
  const acc = (i: number) => 2 + i;
  const code: number[] = [];
  for (let i = 0; i < 4; i++) code.push(op.i32Const, 0, op.i64Load, alignment, ...uleb(8 * i), op.set, acc(i));
  code.push(block, noResult, loop, noResult, op.get, p, op.get, lastByte, i32GeU, brIf, 1);
  for (let i = 0; i < 4; i++) {
    code.push(op.get, acc(i), op.get, p, op.i64Load, alignment, ...uleb(8 * i), op.i64Const, ...sleb64(P2), i64Mul, i64Add);
    code.push(op.i64Const, 31, i64Rotl, op.i64Const, ...sleb64(P1), i64Mul, op.set, acc(i));
  }
  code.push(op.get, p, op.i32Const, STRIPE, i32Add, op.set, p, br, 0, end, end);
  for (let i = 0; i < 4; i++) code.push(op.i32Const, 0, op.get, acc(i), op.i64Store, alignment, ...uleb(8 * i));
  code.push(end);
  const [i32, i64, funcType] = [0x7f, 0x7e, 0x60];
  const body = [...vec([[4, i64]]), ...code]; // locals: one group of four i64
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
    ...section(1, vec([[funcType, 2, i32, i32, 0]])), // type 0: (i32, i32) -> ()
    ...section(3, vec([[0]])), // function 0 has type 0
    ...section(5, vec([[0x00, PAGES]])), // one memory, PAGES pages, no maximum
    ...section(
      7,
      vec([
        [...exportName('m'), 0x02, 0],
        [...exportName('s'), 0x00, 0],
      ]),
    ),
    ...section(10, vec([[...uleb(body.length), ...body]])),
  ]);
}

interface StripeModule {
  memory: Uint8Array;
  /** Hashes the stripes of memory[p .. end) into the accumulators at memory[0 .. 32). */
  stripes: (p: number, end: number) => void;
}

let stripeModule: StripeModule | undefined;

function stripeFunction(): StripeModule {
  if (stripeModule !== undefined) return stripeModule;
  const instance = new WebAssembly.Instance(new WebAssembly.Module(stripeModuleBytes()));
  const exports = instance.exports as { m: WebAssembly.Memory; s: (p: number, end: number) => void };
  stripeModule = { memory: new Uint8Array(exports.m.buffer), stripes: exports.s };
  return stripeModule;
}

// ---------------------------------------------------------------------------------------------
// The hash
// ---------------------------------------------------------------------------------------------

export class Xxh64 {
  /** The four accumulators, little-endian, as the stripe function keeps them. */
  private readonly acc = new Uint8Array(STRIPE);
  /** Bytes hashed so far. */
  private total = 0;
  /** A partial stripe, waiting for the rest of its 32 bytes. */
  private readonly pending = new Uint8Array(STRIPE);
  private pendingBytes = 0;
  private readonly seed: bigint;

  /** `seed`: an unsigned 64-bit number (zstd uses 0). */
  constructor(seed = 0n) {
    this.seed = seed & MASK;
    const view = new DataView(this.acc.buffer);
    view.setBigUint64(0, (this.seed + P1 + P2) & MASK, true);
    view.setBigUint64(8, (this.seed + P2) & MASK, true);
    view.setBigUint64(16, this.seed, true);
    view.setBigUint64(24, (this.seed - P1) & MASK, true);
  }

  update(data: Uint8Array): this {
    this.total += data.length;
    let pos = 0;
    if (this.pendingBytes > 0) {
      pos = Math.min(STRIPE - this.pendingBytes, data.length);
      this.pending.set(data.subarray(0, pos), this.pendingBytes);
      this.pendingBytes += pos;
      if (this.pendingBytes < STRIPE) return this;
      this.stripes(this.pending);
      this.pendingBytes = 0;
    }
    const whole = pos + Math.floor((data.length - pos) / STRIPE) * STRIPE;
    for (let at = pos; at < whole; at += INPUT_MAX) this.stripes(data.subarray(at, Math.min(whole, at + INPUT_MAX)));
    this.pending.set(data.subarray(whole), 0);
    this.pendingBytes = data.length - whole;
    return this;
  }

  /** The low 32 bits of the hash: what a zstd frame stores as its content checksum. */
  digestLow32(): number {
    return Number(this.digest() & 0xffffffffn);
  }

  /** All 64 bits (the state is left as it is: more updates may follow). */
  digest(): bigint {
    const view = new DataView(this.acc.buffer);
    let h: bigint;
    if (this.total >= STRIPE) {
      const [v1, v2, v3, v4] = [0, 8, 16, 24].map((at) => view.getBigUint64(at, true)) as [bigint, bigint, bigint, bigint];
      h = (rotl(v1, 1n) + rotl(v2, 7n) + rotl(v3, 12n) + rotl(v4, 18n)) & MASK;
      for (const v of [v1, v2, v3, v4]) h = mergeRound(h, v);
    } else {
      h = (this.seed + P5) & MASK;
    }
    h = (h + BigInt(this.total)) & MASK;
    const tail = new DataView(this.pending.buffer, 0, this.pendingBytes);
    let pos = 0;
    for (; pos + 8 <= this.pendingBytes; pos += 8) {
      h ^= round(0n, tail.getBigUint64(pos, true));
      h = (rotl(h, 27n) * P1 + P4) & MASK;
    }
    if (pos + 4 <= this.pendingBytes) {
      h ^= (BigInt(tail.getUint32(pos, true)) * P1) & MASK;
      h = (rotl(h, 23n) * P2 + P3) & MASK;
      pos += 4;
    }
    for (; pos < this.pendingBytes; pos++) {
      h ^= (BigInt(tail.getUint8(pos)) * P5) & MASK;
      h = (rotl(h, 11n) * P1) & MASK;
    }
    h ^= h >> 33n;
    h = (h * P2) & MASK;
    h ^= h >> 29n;
    h = (h * P3) & MASK;
    h ^= h >> 32n;
    return h;
  }

  /** Whole stripes (bytes.length a multiple of 32, at most INPUT_MAX) through the WebAssembly loop. */
  private stripes(bytes: Uint8Array): void {
    const { memory, stripes } = stripeFunction();
    memory.set(this.acc, 0);
    memory.set(bytes, INPUT_AT);
    stripes(INPUT_AT, INPUT_AT + bytes.length);
    this.acc.set(memory.subarray(0, STRIPE));
  }
}
