// The protobuf wire format (https://protobuf.dev/programming-guides/encoding/), just enough for
// the handful of small messages the agent exchanges (Istio CA request/response, Envoy SDS
// DiscoveryRequest/Response and Secret). Why not @grpc/proto-loader: parsing the .proto files
// at run time loads protobufjs' reflection and code generator and builds descriptor objects
// for every message, ~5 MB of a sidecar's RSS for five messages (measured with
// bench/agents.ts). The .proto files under proto/ stay the source of truth:
// test/agent/wire.test.ts checks these codecs byte for byte against proto-loader/protobufjs.

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_SGROUP = 3;
const WIRE_EGROUP = 4;
const WIRE_I32 = 5;

const TWO_63 = 2 ** 63;

/** Accumulates fields in the order written; callers write them by ascending field number, as protobufjs does. */
export class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.length;
  }

  private varint(n: number | bigint): void {
    if (typeof n === "number" && n >= 0 && n < 0x80) {
      this.push(Uint8Array.of(n));
      return;
    }
    const out: number[] = [];
    if (typeof n === "number" && n >= 0 && n <= 0xffffffff) {
      let u = n >>> 0;
      while (u >= 0x80) {
        out.push((u & 0x7f) | 0x80);
        u >>>= 7;
      }
      out.push(u);
      this.push(Uint8Array.from(out));
      return;
    }
    let v = BigInt(n);
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, "utf8"));
  }

  bytes(field: number, b: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    this.push(b);
    return this;
  }

  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish());
  }

  /** int64 from a JS number as protobufjs (long.js fromNumber) takes it: NaN is 0, truncated, clamped. */
  int64(field: number, n: number): this {
    let v: bigint;
    if (Number.isNaN(n)) v = 0n;
    else if (n <= -TWO_63) v = -(2n ** 63n);
    else if (n + 1 >= TWO_63) v = 2n ** 63n - 1n;
    else v = BigInt(Math.trunc(n));
    this.tag(field, WIRE_VARINT);
    this.varint(BigInt.asUintN(64, v));
    return this;
  }

  bool(field: number, b: boolean): this {
    this.tag(field, WIRE_VARINT);
    this.varint(b ? 1 : 0);
    return this;
  }

  double(field: number, n: number): this {
    this.tag(field, WIRE_I64);
    const b = Buffer.allocUnsafe(8);
    b.writeDoubleLE(n, 0);
    this.push(b);
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts, this.length);
  }
}

export class ProtoDecodeError extends Error {
  override name = "ProtoDecodeError";
}

/** Reads fields one at a time; unknown fields are skipped with `skip`. Throws on truncated input. */
export class ProtoReader {
  private pos = 0;
  private readonly buf: Buffer;

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  done(): boolean {
    return this.pos >= this.buf.length;
  }

  /** [field number, wire type] of the next field. */
  tag(): [number, number] {
    const t = this.uint32();
    if (t >>> 3 === 0) throw new ProtoDecodeError(`invalid field number 0 at offset ${this.pos}`);
    return [t >>> 3, t & 7];
  }

  private byte(): number {
    if (this.pos >= this.buf.length)
      throw new ProtoDecodeError(`truncated message: index out of range ${this.pos} >= ${this.buf.length}`);
    return this.buf[this.pos++]!;
  }

  /** A varint's low 32 bits, unsigned (lengths, tags). */
  uint32(): number {
    let result = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      const b = this.byte();
      if (shift < 32) result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result >>> 0;
    }
    throw new ProtoDecodeError("varint longer than 10 bytes");
  }

  /** int32 as protobufjs reads it: the varint's low 32 bits, signed. */
  int32(): number {
    return this.uint32() | 0;
  }

  bytes(): Buffer {
    const n = this.uint32();
    if (this.pos + n > this.buf.length)
      throw new ProtoDecodeError(
        `truncated message: index out of range ${this.pos + n} > ${this.buf.length}`,
      );
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /**
   * Like protobufjs' reader on Node (utf8Slice up to min(end, length)), a string cut short at the
   * end of the message is read as far as it goes rather than rejected; the SDS server accepted
   * such requests from peers before and still does.
   */
  string(): string {
    const n = this.uint32();
    const end = Math.min(this.pos + n, this.buf.length);
    const s = this.buf.toString("utf8", this.pos, end);
    this.pos = end;
    return s;
  }

  /** A length-delimited field as its own reader (sub-message). */
  sub(): ProtoReader {
    return new ProtoReader(this.bytes());
  }

  skip(wire: number, field = 0): void {
    switch (wire) {
      case WIRE_VARINT:
        while (this.byte() & 0x80);
        return;
      case WIRE_I64:
        return this.advance(8);
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_SGROUP:
        for (;;) {
          const [f, w] = this.tag();
          if (w === WIRE_EGROUP) {
            if (f !== field) throw new ProtoDecodeError(`group ${field} closed as ${f}`);
            return;
          }
          this.skip(w, f);
        }
      case WIRE_I32:
        return this.advance(4);
      default:
        throw new ProtoDecodeError(`invalid wire type ${wire} at offset ${this.pos}`);
    }
  }

  private advance(n: number): void {
    if (this.pos + n > this.buf.length)
      throw new ProtoDecodeError(
        `truncated message: index out of range ${this.pos + n} > ${this.buf.length}`,
      );
    this.pos += n;
  }
}
