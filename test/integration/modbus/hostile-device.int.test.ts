/**
 * A device that answers wrongly, late, twice, in pieces, with garbage, or not at all, behind a
 * real proxy: every client request gets exactly one answer, and that answer is either the
 * device's own valid answer to that very request or a gateway exception (04 invalid answer,
 * 0B no answer, 0A path unavailable). Never another request's answer (two transactions in
 * flight per connection, so a late or repeated answer meets a busy slot), never a malformed
 * one, and the proxy keeps serving once the device behaves again. A device that interleaves
 * the bytes of its answers is dropped, never read on.
 */
import fc from "fast-check";
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modbusConfigSchema } from "../../../protocols/modbus/config";
import { ModbusProxyService } from "../../../protocols/modbus/service";
import { MemorySink, RawClient } from "./_harness";

const BEHAVIOURS = ["ok", "split", "exception", "wrongTid", "wrongUnit", "wrongFc", "badCount", "duplicate", "late", "silent", "garbage", "close"] as const;
type Behaviour = (typeof BEHAVIOURS)[number];

/** FC 3, one register: the device's value for holding `a` is `a`. */
const answerPdu = (address: number): Buffer => Buffer.from([3, 2, address >> 8, address & 0xff]);
const mbap = (tid: number, unit: number, pdu: Buffer): Buffer => {
  const b = Buffer.alloc(7 + pdu.length);
  b.writeUInt16BE(tid, 0);
  b.writeUInt16BE(pdu.length + 1, 4);
  b[6] = unit;
  pdu.copy(b, 7);
  return b;
};

/** A started proxy reading holdings of unit 1 (read-only, no rate limit) from the device on `dport`. */
async function proxyTo(dport: number, upstream: { timeout_ms: number; connections: number; max_in_flight: number }, sink: MemorySink): Promise<{ service: ModbusProxyService; port: number }> {
  const config = modbusConfigSchema.parse({
    listeners: [{ name: "plain", type: "tcp", listen: "127.0.0.1:0" }],
    upstreams: [{ name: "plc", type: "tcp", target: `127.0.0.1:${dport}`, ...upstream, reconnect: { min_ms: 10, max_ms: 50 } }],
    routes: [{ unit: 1, upstream: "plc" }],
    policy: { identities: [{ match: { address: "127.0.0.1" }, role: "scada" }], roles: { scada: { units: [1], functions: ["read-only"], read: { holding: ["0-65535"] } } } },
    limits: { max_requests_per_s: 0 },
  });
  const service = new ModbusProxyService({ config, events: sink });
  return { service, port: (await service.start())[0]!.port };
}

/** Holding 7 read until the device's own answer comes (at most 50 tries, 20 ms apart); the last answer. */
async function servedAgain(c: RawClient): Promise<string> {
  let got = "";
  for (let i = 0; i < 50 && got !== "03020007"; i++) {
    got = await c.request(1, "03 0007 0001");
    if (got !== "03020007") await new Promise((r) => setTimeout(r, 20));
  }
  return got;
}

/**
 * A TCP device reading FC 3 request frames: `answer` is called for each with its socket, and
 * `connected` once per connection (for per-connection state).
 */
abstract class FrameDevice {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor() {
    this.server = createServer((s) => {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on("error", () => {});
      s.on("close", () => this.sockets.delete(s));
      const answer = this.connected(s);
      let buf = Buffer.alloc(0);
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 7 && buf.length >= 6 + buf.readUInt16BE(4)) {
          const size = 6 + buf.readUInt16BE(4);
          const f = buf.subarray(0, size);
          buf = buf.subarray(size);
          answer(f.readUInt16BE(0), f[6]!, f.readUInt16BE(8));
        }
      });
    });
  }

  /** A new connection: returns what answers its frames. */
  protected abstract connected(s: Socket): (tid: number, unit: number, address: number) => void;

  listen(): Promise<number> {
    return new Promise((r) => this.server.listen(0, "127.0.0.1", () => r((this.server.address() as { port: number }).port)));
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** Answers each request frame as the next behaviour of `script` says (cycling). */
class HostileDevice extends FrameDevice {
  script: Behaviour[] = ["ok"];
  private next = 0;

  protected connected(s: Socket) {
    return (tid: number, unit: number, address: number) => this.answer(s, tid, unit, address);
  }

  private answer(s: Socket, tid: number, unit: number, address: number): void {
    const b = this.script[this.next++ % this.script.length]!;
    const good = mbap(tid, unit, answerPdu(address));
    const write = (x: Buffer) => void (s.destroyed || s.write(x));
    switch (b) {
      case "ok":
        return write(good);
      case "split":
        write(good.subarray(0, 5));
        setTimeout(() => write(good.subarray(5)), 3);
        return;
      case "exception":
        return write(mbap(tid, unit, Buffer.from([0x83, 0x02])));
      case "wrongTid":
        return write(mbap(tid ^ 0x8000, unit, answerPdu(address)));
      case "wrongUnit":
        return write(mbap(tid, (unit + 1) & 0xff, answerPdu(address)));
      case "wrongFc":
        return write(mbap(tid, unit, Buffer.from([4, 2, 0, 0])));
      case "badCount":
        return write(mbap(tid, unit, Buffer.from([3, 4, 0, 0, 0, 0])));
      case "duplicate":
        write(good);
        setTimeout(() => write(good), 2);
        return;
      case "late":
        // After the proxy's timeout (150 ms): its slot may hold another request by then.
        setTimeout(() => write(good), 180);
        return;
      case "silent":
        return;
      case "garbage":
        // A protocol id that is not 0: the stream cannot be trusted after it.
        return write(Buffer.from([0, 1, 0xab, 0xcd, 0, 2, 0, 0xff]));
      case "close":
        s.destroy();
        return;
    }
  }
}

describe("proxy: a hostile or broken device behind it", () => {
  const device = new HostileDevice();
  let service: ModbusProxyService;
  let port = 0;
  beforeAll(async () => {
    const dport = await device.listen();
    ({ service, port } = await proxyTo(dport, { timeout_ms: 150, connections: 2, max_in_flight: 2 }, new MemorySink()));
  });
  afterAll(async () => {
    await service.stop();
    await device.close();
  });

  it("answers every request once, with its own valid answer or a gateway exception", async () => {
    let checked = 0;
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom(...BEHAVIOURS), { minLength: 1, maxLength: 12 }), fc.integer({ min: 1, max: 4 }), async (script, clients) => {
        device.script = script;
        const cs = await Promise.all(Array.from({ length: clients }, () => RawClient.connect(port)));
        try {
          // Each client pipelines three reads of addresses no other request of the run uses
          // (and the runs use other addresses again): a mixed-up answer cannot pass.
          const base = (run++ * 16) % 60_000;
          const asks = cs.flatMap((c, i) => [0, 1, 2].map((k) => ({ c, address: base + 4 * i + k })));
          const answers = await Promise.all(asks.map((a) => a.c.request(1, `03 ${a.address.toString(16).padStart(4, "0")} 0001`, 3000)));
          answers.forEach((got, i) => {
            const own = answerPdu(asks[i]!.address).toString("hex");
            expect([own, "8302", "8304", "830b", "830a"], `script ${script.join(",")}`).toContain(got);
          });
          checked += answers.length;
        } finally {
          for (const c of cs) c.close();
        }
      }),
      { numRuns: 50 },
    );
    expect(checked).toBeGreaterThan(100);
    // Behaving again: served at once (reconnected if the device had closed the connection).
    device.script = ["ok"];
    const c = await RawClient.connect(port);
    expect(await servedAgain(c)).toBe("03020007");
    c.close();
  });
});

/**
 * Writes the first 5 bytes (id, protocol, length's high byte) of each answer at once and the
 * rest once three answers are begun (or after 20 ms): A5 B5 C5 A… B… C…. Read as one stream,
 * A5 B5 is a frame whenever B's id has a high byte of 2 to 253 (its length), and C5 with A's
 * rest is then a well-formed answer under C's id carrying A's data.
 */
class InterleavingDevice extends FrameDevice {
  interleave = true;

  protected connected(s: Socket) {
    let tails: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    const flush = () => {
      clearTimeout(timer);
      timer = undefined;
      if (!s.destroyed) for (const t of tails) s.write(t);
      tails = [];
    };
    return (tid: number, unit: number, address: number) => {
      const good = mbap(tid, unit, answerPdu(address));
      if (!this.interleave) return void s.write(good);
      s.write(good.subarray(0, 5));
      tails.push(good.subarray(5));
      if (tails.length === 3) flush();
      else timer ??= setTimeout(flush, 20);
    };
  }
}

describe("proxy: a device that interleaves the bytes of its answers", () => {
  it("never passes on a frame read across answers; the connection is dropped and reported", async () => {
    const device = new InterleavingDevice();
    const dport = await device.listen();
    const sink = new MemorySink();
    const { service, port } = await proxyTo(dport, { timeout_ms: 300, connections: 1, max_in_flight: 4 }, sink);
    try {
      const c = await RawClient.connect(port);
      // Three reads in one segment, 600 times: the proxy's transaction ids pass through every
      // high byte from 0 to 6, so some triples meet the frame described above.
      for (let run = 0; run < 600; run++) {
        const addresses = [0, 1, 2].map((k) => run * 3 + k);
        const answers = await Promise.all(c.requestAll(1, addresses.map((a) => `03 ${a.toString(16).padStart(4, "0")} 0001`), 3000));
        answers.forEach((got, i) => {
          const mine = answerPdu(addresses[i]!).toString("hex");
          expect([mine, "8304", "830b", "830a"], `run ${run}, address ${addresses[i]}`).toContain(got);
        });
      }
      const reported = sink.drafts.filter((d) => (d.ocsf.finding_info as { types?: string[] } | undefined)?.types?.includes("modbus.upstream_invalid"));
      expect(reported.length).toBeGreaterThan(0);
      expect(reported[0]!.ocsf.message).toMatch(/^Modbus upstream plc sent bytes that are not a Modbus answer \(.+\); the connection was reset$/);
      // Once the device answers whole again, its answers pass (over a connection made again).
      device.interleave = false;
      expect(await servedAgain(c)).toBe("03020007");
      c.close();
    } finally {
      await service.stop();
      await device.close();
    }
  });
});
