/** The pooled Modbus TCP upstream: write batching and transaction-id mapping. */
import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { encodeRequest, type ModbusRequest } from "../../../protocols/modbus/codec/pdu";
import { TcpUpstream } from "../../../protocols/modbus/upstream/tcp";

const opts = { name: "dev", host: "127.0.0.1", connections: 1, max_in_flight: 16, max_queue: 64, timeout_ms: 2000, connect_timeout_ms: 1000, reconnect: { min_ms: 50, max_ms: 200 } };

/** A device that records every chunk it reads and answers FC 3 (register i = address + i), last frame of a chunk first. */
async function device(): Promise<{ server: Server; port: number; chunks: Buffer[] }> {
  const chunks: Buffer[] = [];
  const server = createServer((s: Socket) => {
    s.setNoDelay(true);
    s.on("data", (d: Buffer) => {
      chunks.push(Buffer.from(d));
      const answers: Buffer[] = [];
      for (let o = 0; o + 7 <= d.length; o += 6 + d.readUInt16BE(o + 4)) {
        const addr = d.readUInt16BE(o + 8);
        const q = d.readUInt16BE(o + 10);
        const a = Buffer.alloc(9 + 2 * q);
        d.copy(a, 0, o, o + 4);
        a.writeUInt16BE(3 + 2 * q, 4);
        a[6] = d[o + 6]!;
        a[7] = 3;
        a[8] = 2 * q;
        for (let i = 0; i < q; i++) a.writeUInt16BE(addr + i, 9 + 2 * i);
        answers.push(a);
      }
      s.write(Buffer.concat(answers.reverse()));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as { port: number }).port, chunks };
}

const read = (address: number, quantity: number): ModbusRequest => ({ fc: 3, address, quantity });
const expected = (address: number, quantity: number): string => Buffer.from([3, 2 * quantity, ...Array.from({ length: quantity }, (_, i) => [(address + i) >> 8, (address + i) & 0xff]).flat()]).toString("hex");

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function upAgainst(port: number): Promise<TcpUpstream> {
  const up = new TcpUpstream({ ...opts, port });
  up.start();
  cleanup.push(() => up.stop());
  for (let i = 0; i < 100 && up.status().state !== "up"; i++) await new Promise((r) => setTimeout(r, 10));
  expect(up.status().state).toBe("up");
  return up;
}

describe("TcpUpstream", () => {
  it("writes a lone request at once and the requests of one turn in one write, each answer to its own request", async () => {
    const dev = await device();
    cleanup.push(() => new Promise((r) => dev.server.close(() => r())));
    const up = await upAgainst(dev.port);

    expect((await up.request(1, read(7, 2), encodeRequest(read(7, 2)))).toString("hex")).toBe(expected(7, 2));
    expect(dev.chunks).toHaveLength(1);
    expect(dev.chunks[0]!.length).toBe(12);

    // Five requests in one turn: the first finds the upstream idle and leaves at once, the other
    // four in one write at the end of the turn (so at most two reads for the device, never five).
    // The device answers each chunk's frames in reverse order.
    const addrs = [100, 200, 300, 400, 500];
    const answers = await Promise.all(addrs.map((a, i) => up.request(1, read(a, i + 1), encodeRequest(read(a, i + 1)))));
    expect(answers.map((b) => b.toString("hex"))).toEqual(addrs.map((a, i) => expected(a, i + 1)));
    const later = Buffer.concat(dev.chunks.slice(1));
    expect(dev.chunks.length).toBeLessThanOrEqual(3);
    expect(later.length).toBe(5 * 12);
    const tids = Array.from({ length: 5 }, (_, i) => later.readUInt16BE(12 * i));
    expect(new Set(tids).size).toBe(5);
    expect(up.status().in_flight).toBe(0);
  });

  it("submit calls back exactly once, synchronously when the upstream is stopped", async () => {
    const up = new TcpUpstream({ ...opts, port: 9 });
    const got: string[] = [];
    up.submit({ unit: 1, req: read(0, 1), pdu: encodeRequest(read(0, 1)), answer: (pdu) => got.push(pdu.toString("hex")) }, undefined);
    expect(got).toEqual(["830a"]);
  });

  it("drops a late answer to a timed-out request: the next request in its slot gets its own answer", async () => {
    // The device holds back its answer to address 1 and sends it just before the answer to
    // address 3, the request that took the timed-out one's slot (two slots: tids 1 and 3 share one).
    const held: Buffer[] = [];
    const server = createServer((s: Socket) => {
      s.setNoDelay(true);
      s.on("data", (d: Buffer) => {
        for (let o = 0; o + 7 <= d.length; o += 6 + d.readUInt16BE(o + 4)) {
          const addr = d.readUInt16BE(o + 8);
          const a = Buffer.from([0, 0, 0, 0, 0, 5, d[o + 6]!, 3, 2, addr >> 8, addr & 0xff]);
          d.copy(a, 0, o, o + 2);
          if (addr === 1) held.push(a);
          else s.write(addr === 3 ? Buffer.concat([...held.splice(0), a]) : a);
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanup.push(() => new Promise((r) => server.close(() => r())));
    const up = new TcpUpstream({ ...opts, port: (server.address() as { port: number }).port, max_in_flight: 2, timeout_ms: 100 });
    up.start();
    cleanup.push(() => up.stop());
    for (let i = 0; i < 100 && up.status().state !== "up"; i++) await new Promise((r) => setTimeout(r, 10));
    expect((await up.request(1, read(1, 1), encodeRequest(read(1, 1)))).toString("hex")).toBe("830b");
    expect((await up.request(1, read(2, 1), encodeRequest(read(2, 1)))).toString("hex")).toBe(expected(2, 1));
    const [a3, a4] = await Promise.all([up.request(1, read(3, 1), encodeRequest(read(3, 1))), up.request(1, read(4, 1), encodeRequest(read(4, 1)))]);
    expect([a3.toString("hex"), a4.toString("hex")]).toEqual([expected(3, 1), expected(4, 1)]);
    expect(up.status().in_flight).toBe(0);
  });

  it("reassembles answers split across reads at any byte", async () => {
    // The device sends the answers to one batch byte by byte, a few milliseconds apart.
    const server = createServer((s: Socket) => {
      s.setNoDelay(true);
      let sending = Promise.resolve();
      s.on("error", () => {});
      s.on("data", (d: Buffer) => {
        const answers: Buffer[] = [];
        for (let o = 0; o + 7 <= d.length; o += 6 + d.readUInt16BE(o + 4)) {
          const addr = d.readUInt16BE(o + 8);
          const a = Buffer.from([0, 0, 0, 0, 0, 5, d[o + 6]!, 3, 2, addr >> 8, addr & 0xff]);
          d.copy(a, 0, o, o + 2);
          answers.push(a);
        }
        const all = Buffer.concat(answers);
        // One writer at a time: the batches' bytes must not interleave.
        sending = sending.then(async () => {
          for (let i = 0; i < all.length && !s.destroyed; i++) {
            s.write(all.subarray(i, i + 1));
            await new Promise((r) => setTimeout(r, 2));
          }
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanup.push(() => new Promise((r) => server.close(() => r())));
    const up = await upAgainst((server.address() as { port: number }).port);
    const got = await Promise.all([10, 20, 30].map((a) => up.request(1, read(a, 1), encodeRequest(read(a, 1)))));
    expect(got.map((b) => b.toString("hex"))).toEqual([expected(10, 1), expected(20, 1), expected(30, 1)]);
  });
});
