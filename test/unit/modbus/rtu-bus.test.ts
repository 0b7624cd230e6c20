import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeRtu, encodeRtu } from "../../../protocols/modbus/codec/frame";
import { encodeRequest, type ModbusRequest } from "../../../protocols/modbus/codec/pdu";
import { RtuBus } from "../../../protocols/modbus/upstream/rtu-bus";
import type { ByteTransport } from "../../../protocols/modbus/upstream/rtu-transport";

/** A simulated multi-drop line: units in `alive` answer after `latencyMs`; others are silent. */
class FakeLine implements ByteTransport {
  private data: (b: Buffer) => void = () => {};
  readonly wire: number[] = [];
  busy = 0;
  maxBusy = 0;
  constructor(
    private readonly alive: Set<number>,
    private readonly latencyMs = 2,
    private readonly garble = new Set<number>(),
  ) {}
  async open(): Promise<void> {}
  write(b: Buffer): void {
    const f = decodeRtu(b);
    if (!f.ok) throw new Error("bad frame on the wire");
    this.wire.push(f.unit);
    this.busy++;
    this.maxBusy = Math.max(this.maxBusy, this.busy);
    setTimeout(() => {
      this.busy--;
      if (!this.alive.has(f.unit)) return;
      const q = f.pdu.readUInt16BE(3);
      const resp = Buffer.alloc(2 + 2 * q);
      resp[0] = 3;
      resp[1] = 2 * q;
      const frame = encodeRtu(f.unit, resp);
      if (this.garble.has(f.unit)) frame[frame.length - 1]! ^= 0xff;
      // Deliver in two chunks, as a UART would.
      this.data(frame.subarray(0, 3));
      setTimeout(() => this.data(frame.subarray(3)), 1);
    }, this.latencyMs);
  }
  onData(cb: (b: Buffer) => void): void {
    this.data = cb;
  }
  onClose(): void {}
  async close(): Promise<void> {}
}

/**
 * A line whose slave answers each request as `respond` says: it gets the unit, the address read
 * (FC 3, one register) and the answer a correct slave gives (value = address), and schedules
 * bytes with `at(ms, bytes)`. `inject` puts bytes on the line at once; `sent` has the times of
 * the requests.
 */
function scriptedLine(respond: (r: { unit: number; address: number; good: Buffer }, at: (ms: number, b: Buffer) => void) => void): ByteTransport & { sent: number[]; inject(b: Buffer): void } {
  let data: (b: Buffer) => void = () => {};
  const sent: number[] = [];
  return {
    sent,
    inject: (b) => data(b),
    async open() {},
    write(b: Buffer) {
      const f = decodeRtu(b);
      if (!f.ok) throw new Error("bad frame on the wire");
      sent.push(performance.now());
      const address = f.pdu.readUInt16BE(1);
      respond({ unit: f.unit, address, good: encodeRtu(f.unit, Buffer.from([3, 2, address >> 8, address & 0xff])) }, (ms, x) => void setTimeout(() => data(x), ms));
    },
    onData(cb) {
      data = cb;
    },
    onClose() {},
    async close() {},
  };
}

const read: ModbusRequest = { fc: 3, address: 0, quantity: 2 };
const pdu = encodeRequest(read);

function bus(line: FakeLine, over: Partial<ConstructorParameters<typeof RtuBus>[0]> = {}) {
  const b = new RtuBus({
    name: "bus",
    type: "rtu",
    target: "fake",
    transport: line,
    baud: 115200,
    timeout_ms: 200,
    dead_after: 2,
    dead_backoff: { min_ms: 400, max_ms: 2000 },
    max_queue: 64,
    reconnect: { min_ms: 100, max_ms: 1000 },
    ...over,
  });
  b.start();
  return b;
}

describe("RTU bus", () => {
  it("runs one transaction at a time and answers every unit", async () => {
    const line = new FakeLine(new Set([1, 2, 3]));
    const b = bus(line);
    await new Promise((r) => setTimeout(r, 5));
    const out = await Promise.all([1, 2, 3, 1, 2, 3].map((u) => b.request(u, read, pdu)));
    expect(out.map((o) => o.toString("hex"))).toEqual(Array(6).fill("030400000000"));
    expect(line.maxBusy).toBe(1);
    await b.stop();
  });

  it("serves units round robin: a unit with a long queue does not starve another", async () => {
    const line = new FakeLine(new Set([1, 2]));
    const b = bus(line);
    await new Promise((r) => setTimeout(r, 5));
    const many = Array.from({ length: 10 }, () => b.request(1, read, pdu));
    const other = b.request(2, read, pdu);
    await other;
    // Unit 2 went on the wire within the first three transactions, not after all ten of unit 1's.
    expect(line.wire.indexOf(2)).toBeLessThanOrEqual(2);
    await Promise.all(many);
    await b.stop();
  });

  it("answers 0B for a silent unit, backs it off, and keeps the live unit fast", async () => {
    const line = new FakeLine(new Set([1]));
    // Not about the quiet after a timeout (tested below): none here, so the timings are the backoff's.
    const b = bus(line, { late_answer_ms: 0 });
    await new Promise((r) => setTimeout(r, 5));
    expect((await b.request(7, read, pdu)).toString("hex")).toBe("830b");
    expect((await b.request(7, read, pdu)).toString("hex")).toBe("830b"); // second timeout: now dead
    expect(b.status().dead_units).toEqual([7]);
    const wireBefore = line.wire.length;
    const t0 = Date.now();
    expect((await b.request(7, read, pdu)).toString("hex")).toBe("830b"); // at once, not on the wire
    expect(Date.now() - t0).toBeLessThan(100); // far below the 200 ms timeout
    expect(line.wire.length).toBe(wireBefore);
    // Meanwhile unit 1 answers without waiting for unit 7's timeouts.
    const t1 = Date.now();
    const live = await Promise.all([b.request(1, read, pdu), b.request(7, read, pdu), b.request(1, read, pdu)]);
    expect(live.map((x) => x.toString("hex"))).toEqual(["030400000000", "830b", "030400000000"]);
    expect(Date.now() - t1).toBeLessThan(150); // no timeout of unit 7 in the way
    // After the backoff one probe goes on the wire again.
    await new Promise((r) => setTimeout(r, 420));
    expect(b.status().dead_units).toEqual([]);
    const n = line.wire.length;
    expect((await b.request(7, read, pdu)).toString("hex")).toBe("830b");
    expect(line.wire.length).toBe(n + 1);
    expect(b.status().dead_units).toEqual([7]); // one more timeout: dead again, longer
    await b.stop();
  });

  it("answers 04 for a garbled (bad CRC) response and 0A when the line is down or the queue full", async () => {
    const line = new FakeLine(new Set([1, 5]), 2, new Set([5]));
    const b = bus(line, { max_queue: 2 });
    await new Promise((r) => setTimeout(r, 5));
    expect((await b.request(5, read, pdu)).toString("hex")).toBe("8304");
    const q = [b.request(1, read, pdu), b.request(1, read, pdu), b.request(1, read, pdu), b.request(1, read, pdu)];
    const res = (await Promise.all(q)).map((x) => x.toString("hex"));
    expect(res.filter((r) => r === "830a").length).toBeGreaterThan(0);
    await b.stop();
    expect((await b.request(1, read, pdu)).toString("hex")).toBe("830a");
  });

  it("never takes a slave's late answer for the answer to the next request", async () => {
    // Unit 1 answers each read with its address as the value: the read of 10 120 ms after the
    // 200 ms timeout, the read of 20 (same unit, function and size) after 150 ms. Taken in turn,
    // the late answer to 10 would land while 20 is on the wire and pass every check of an answer
    // to 20. The quiet after the timeout (900 ms) leaves the late answer 780 ms to arrive, so a
    // loaded machine's late timers cannot make it land after the quiet.
    const line = scriptedLine((r, at) => at(r.address === 10 ? 320 : 150, r.good));
    const sent = line.sent;
    const one = (address: number): ModbusRequest => ({ fc: 3, address, quantity: 1 });
    const ask = (b: RtuBus, address: number) => b.request(1, one(address), encodeRequest(one(address))).then((x) => x.toString("hex"));
    const b = bus(new FakeLine(new Set()), { transport: line, dead_after: 5, late_answer_ms: 900 });
    await new Promise((r) => setTimeout(r, 5));
    const [a10, a20] = await Promise.all([ask(b, 10), ask(b, 20)]);
    expect(a10).toBe("830b");
    expect(a20).toBe("03020014"); // its own value, not 000a
    expect(sent[1]! - sent[0]!).toBeGreaterThanOrEqual(200 + 900 - 5); // timeout, then the quiet
    // Bytes heard while nothing is on the wire keep the line quiet until they stop: the request
    // goes out only after ten frame gaps (1.75 ms at 115,200 baud) without a byte. Judged against
    // the bytes actually heard, not the trickle's schedule, which a loaded machine stretches.
    sent.length = 0;
    const heard: number[] = [];
    const trickle = setInterval(() => {
      heard.push(performance.now());
      line.inject(Buffer.from([0x55]));
    }, 5);
    setTimeout(() => clearInterval(trickle), 120);
    await new Promise((r) => setTimeout(r, 20));
    const asked = performance.now();
    expect(await ask(b, 30)).toBe("0302001e");
    clearInterval(trickle);
    const lastBefore = heard.filter((h) => h < sent[0]!).at(-1)!;
    expect(heard.some((h) => h < asked)).toBe(true);
    expect(sent[0]! - lastBefore).toBeGreaterThanOrEqual(10 * 1.75 - 0.5);
    await b.stop();
  });

  it("answers every request once, with its own answer or a gateway exception, whatever a slave does", async () => {
    // A slave scripted per request: correct, in pieces, an exception, the wrong unit or function,
    // a bad CRC, noise after its answer, an answer after the timeout (within late_answer_ms), or
    // nothing. Reads of distinct addresses, value = address: a mixed-up answer cannot pass.
    const BEHAVIOURS = ["ok", "split", "exception", "wrongUnit", "wrongFc", "badCrc", "noiseAfter", "late", "silent"] as const;
    let script: (typeof BEHAVIOURS)[number][] = ["ok"];
    let next = 0;
    const line = scriptedLine(({ unit, address: a, good }, at) => {
      switch (script[next++ % script.length]!) {
        case "ok":
          return at(2, good);
        case "split":
          at(2, good.subarray(0, 2));
          at(3, good.subarray(2, 5));
          return at(4, good.subarray(5));
        case "exception":
          return at(2, encodeRtu(unit, Buffer.from([0x83, 0x02])));
        case "wrongUnit":
          return at(2, encodeRtu(unit + 1, Buffer.from([3, 2, a >> 8, a & 0xff])));
        case "wrongFc":
          return at(2, encodeRtu(unit, Buffer.from([4, 2, 0, 0])));
        case "badCrc": {
          const x = Buffer.from(good);
          x[x.length - 1]! ^= 0xff;
          return at(2, x);
        }
        case "noiseAfter":
          return at(2, Buffer.concat([good, Buffer.from([0x00, 0x55])]));
        case "late":
          return at(60, good); // timeout 40 ms, quiet 200 ms after it: 180 ms for a late timer
        case "silent":
          return;
      }
    });
    const b = bus(new FakeLine(new Set()), { transport: line, timeout_ms: 40, late_answer_ms: 200, dead_after: 1000 });
    await new Promise((r) => setTimeout(r, 5));
    let run = 0;
    let answered = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom(...BEHAVIOURS), { minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 6 }), async (s, n) => {
        script = s;
        next = 0;
        const base = (run++ * 8) % 60_000;
        const got = await Promise.all(Array.from({ length: n }, (_, i) => b.request(1, { fc: 3, address: base + i, quantity: 1 }, encodeRequest({ fc: 3, address: base + i, quantity: 1 }))));
        got.forEach((g, i) => {
          const own = "0302" + (base + i).toString(16).padStart(4, "0");
          expect([own, "8302", "8304", "830b", "830a"], `script ${s.join(",")}`).toContain(g.toString("hex"));
        });
        answered += got.length;
        // Let a late answer of the last request pass before the next run.
        await new Promise((r) => setTimeout(r, 70));
      }),
      { numRuns: 30 },
    );
    expect(answered).toBeGreaterThan(30);
    await b.stop();
  });

  it("holds the line quiet when it opens: stale bytes a device server passes on are not an answer", async () => {
    // Opening the line, a serial device server forwards an answer it kept from before (value 99),
    // 3 ms in; the slave answers requests after 10 ms.
    const line = scriptedLine((r, at) => at(10, r.good));
    const open = line.open.bind(line);
    line.open = async () => {
      await open();
      setTimeout(() => line.inject(encodeRtu(1, Buffer.from([3, 2, 0, 99]))), 3);
    };
    const b = bus(new FakeLine(new Set()), { transport: line, late_answer_ms: 60 });
    await new Promise((r) => setImmediate(r));
    expect(b.status().state).toBe("up");
    const one: ModbusRequest = { fc: 3, address: 7, quantity: 1 };
    expect((await b.request(1, one, encodeRequest(one))).toString("hex")).toBe("03020007"); // not 0063
    await b.stop();
  });
});
