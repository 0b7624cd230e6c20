import { describe, expect, it } from "vitest";
import { ChunkGuard } from "../../../protocols/opcua/front-guard";

const chunk = (type: string, size: number, fill = 0): Buffer => {
  const b = Buffer.alloc(Math.max(size, 8), fill);
  b.write(type, 0, "latin1");
  b.writeUInt32LE(size, 4);
  return b;
};
const hello = (recv: number): Buffer => {
  const b = chunk("HELF", 40);
  b.writeUInt32LE(recv, 12);
  return b;
};

describe("OPC UA chunk guard", () => {
  it("passes a Hello and chunks within the granted receive buffer, whatever the split", () => {
    const stream = Buffer.concat([hello(16384), chunk("OPNF", 200), chunk("MSGC", 16384), chunk("MSGF", 9)]);
    for (const step of [1, 3, 7, 64, stream.length]) {
      const g = new ChunkGuard();
      for (let off = 0; off < stream.length; off += step) expect(g.feed(stream.subarray(off, off + step))).toBeUndefined();
    }
  });

  it("refuses a first chunk that is no Hello, a Hello above 4 KiB, an oversized or undersized chunk", () => {
    expect(new ChunkGuard().feed(chunk("MSGF", 100))).toMatch(/not a Hello/);
    expect(new ChunkGuard().feed(chunk("HELF", 5000))).toMatch(/a Hello of 5000 bytes/);
    const g = new ChunkGuard();
    expect(g.feed(hello(16384))).toBeUndefined();
    expect(g.feed(chunk("MSGF", 16385).subarray(0, 8))).toMatch(/MSG chunk of 16385 bytes, above the 16384-byte/);
    const h = new ChunkGuard();
    h.feed(hello(0));
    expect(h.feed(chunk("MSGF", 65537).subarray(0, 8))).toMatch(/above the 65536-byte/);
    const k = new ChunkGuard();
    k.feed(hello(8192));
    expect(k.feed(Buffer.from([0x4d, 0x53, 0x47, 0x46, 4, 0, 0, 0]))).toMatch(/shorter than its header/);
  });
});

describe("OPC UA chunk guard, strangers", () => {
  it("refuses a stranger after 8 bytes, without waiting for a Hello's 20", () => {
    expect(new ChunkGuard().feed(Buffer.from("GET / HTTP/1.1\r\n"))).toMatch(/"GET", not a Hello/);
  });
});

describe("OPC UA chunk guard, message limits", () => {
  it("refuses a message of more chunks or bytes than allowed, and counts again after a final chunk", () => {
    const g = new ChunkGuard({ maxChunkCount: 3, maxMessageBytes: 1_000_000 });
    expect(g.feed(hello(65536))).toBeUndefined();
    for (let i = 0; i < 2; i++) expect(g.feed(chunk("MSGC", 100))).toBeUndefined();
    expect(g.feed(chunk("MSGF", 100))).toBeUndefined();
    for (let i = 0; i < 3; i++) expect(g.feed(chunk("MSGC", 100))).toBeUndefined();
    expect(g.feed(chunk("MSGC", 100))).toMatch(/a MSG message of more than 3 chunks \(opcua\.front\.limits\.max_chunk_count\)/);
    const b = new ChunkGuard({ maxChunkCount: 100, maxMessageBytes: 20_000 });
    b.feed(hello(65536));
    expect(b.feed(chunk("MSGC", 10_000))).toBeUndefined();
    expect(b.feed(chunk("MSGA", 10_000))).toBeUndefined();
    expect(b.feed(chunk("MSGC", 10_000))).toBeUndefined();
    expect(b.feed(chunk("MSGC", 10_001))).toMatch(/more than 20000 bytes \(opcua\.front\.limits\.max_message_bytes\)/);
  });

  it("asks before each OpenSecureChannel chunk and refuses what it refuses", () => {
    let n = 0;
    const g = new ChunkGuard(undefined, () => (++n > 1 ? "over the rate" : undefined));
    expect(g.feed(hello(65536))).toBeUndefined();
    expect(g.feed(chunk("OPNF", 200))).toBeUndefined();
    expect(g.feed(chunk("MSGF", 200))).toBeUndefined();
    expect(g.feed(chunk("OPNF", 200))).toBe("over the rate");
    expect(n).toBe(2);
  });
});
