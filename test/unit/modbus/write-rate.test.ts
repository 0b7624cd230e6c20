import { describe, expect, it } from "vitest";
import type { PeerIdentity } from "../../../protocols/modbus/policy/identity";
import type { ModbusRequest } from "../../../protocols/modbus/codec/pdu";
import { ModbusPolicy, rateKey } from "../../../protocols/modbus/policy/engine";
import { parsePolicy } from "../../../protocols/modbus/policy/schema";
import { RateLimiter } from "../../../protocols/modbus/policy/rate-limiter";

const write: ModbusRequest = { fc: 6, address: 10, value: 1 };
const read: ModbusRequest = { fc: 3, address: 10, quantity: 1 };

function policy(maxRateIdentities?: number) {
  return new ModbusPolicy(
    parsePolicy({
      identities: [
        { match: { address: "10.0.0.0/24" }, role: "scada" },
        { match: { role: "engineer" }, role: "eng" },
      ],
      roles: {
        scada: { units: [1], functions: ["read-write"], read: { holding: ["0-99"] }, write: { holding: ["10"] }, write_rate: { max: 3, interval_ms: 1000 } },
        eng: { units: [1], functions: ["read-write"], read: { holding: ["0-99"] }, write: { holding: ["10"] }, write_rate: { max: 2, interval_ms: 1000 } },
      },
    }),
    undefined,
    maxRateIdentities === undefined ? {} : { maxRateIdentities },
  );
}

describe("write rates per identity", () => {
  it("counts every connection of one identity against one budget", () => {
    const pol = policy();
    // Each connection has its own PeerIdentity object; these are three connections of one client.
    const conns: PeerIdentity[] = [1, 2, 3].map(() => ({ transport: "tcp", address: "10.0.0.5" }));
    const ask = (id: PeerIdentity, req: ModbusRequest = write, now = 1000) => pol.decide({ identity: id, unit: 1, req, now });
    expect(ask(conns[0]!).allow).toBe(true);
    expect(ask(conns[1]!).allow).toBe(true);
    expect(ask(conns[2]!).allow).toBe(true);
    for (const c of conns) expect(ask(c)).toMatchObject({ allow: false, rule: "roles.scada.write_rate" });
    // A fourth connection brings no new budget; IPv4-mapped IPv6 is the same address.
    expect(ask({ transport: "tcp", address: "::ffff:10.0.0.5" })).toMatchObject({ allow: false, rule: "roles.scada.write_rate" });
    expect(ask(conns[0]!, read).allow).toBe(true); // reads are not counted
    expect(ask({ transport: "tcp", address: "10.0.0.6" }).allow).toBe(true); // another client
    expect(ask(conns[1]!, write, 1000 + 334).allow).toBe(true); // one token back after a third of the interval
    expect(ask(conns[2]!, write, 1000 + 334).allow).toBe(false);
  });

  it("keys TLS clients by certificate, not by connection or address", () => {
    const pol = policy();
    const cert = (address: string, fingerprint: string): PeerIdentity => ({ transport: "tls", address, role: "engineer", fingerprint, subject: "CN=eng1" });
    const ask = (id: PeerIdentity) => pol.decide({ identity: id, unit: 1, req: write, now: 5000 }).allow;
    expect(ask(cert("10.1.0.1", "AA:BB"))).toBe(true);
    expect(ask(cert("10.1.0.2", "aabb"))).toBe(true); // same certificate from elsewhere
    expect(ask(cert("10.1.0.1", "AA:BB"))).toBe(false);
    expect(ask(cert("10.1.0.1", "CC:DD"))).toBe(true); // another engineer's certificate
    expect(rateKey("eng", cert("10.1.0.1", "sha256:aa:bb"))).toBe(rateKey("eng", cert("10.9.9.9", "AABB")));
    expect(rateKey("eng", { transport: "tcp", address: "10.1.0.1" })).not.toBe(rateKey("eng", cert("10.1.0.1", "AABB")));
  });

  it("holds a bounded number of identities, forgets idle ones and refuses newcomers while all are busy", () => {
    const pol = policy(2);
    const ask = (address: string, now: number) => pol.decide({ identity: { transport: "tcp", address }, unit: 1, req: write, now });
    expect(ask("10.0.0.1", 0).allow).toBe(true);
    expect(ask("10.0.0.2", 0).allow).toBe(true);
    // Both buckets are in use: a third identity is refused rather than resetting someone's count.
    expect(ask("10.0.0.3", 100)).toMatchObject({ allow: false, rule: "roles.scada.write_rate", reason: expect.stringContaining("none is idle") });
    // 10.0.0.1 refills first (one token back after 1000/3 ms): it is forgotten, 10.0.0.3 gets its place.
    expect(ask("10.0.0.2", 300).allow).toBe(true); // 10.0.0.2 stays busy
    expect(ask("10.0.0.3", 340).allow).toBe(true);
    // 10.0.0.2 kept its count (2 taken, 0.9 + 1.02 back: 2.92 tokens); a reset bucket would allow 3.
    expect([1, 2, 3].map(() => ask("10.0.0.2", 640).allow)).toEqual([true, true, false]);
  });
});

describe("RateLimiter", () => {
  it("refills over time, never above max, and ignores a clock stepped backwards", () => {
    const r = new RateLimiter(8);
    expect(["ok", "ok", "rate"].map(() => r.take("a", 2, 1000, 0))).toEqual(["ok", "ok", "rate"]);
    expect(r.take("a", 2, 1000, 500)).toBe("ok");
    expect(r.take("a", 2, 1000, 500)).toBe("rate");
    expect(r.take("a", 2, 1000, -10_000)).toBe("rate"); // clock went back: no refill
    expect(r.take("a", 2, 1000, -9_500)).toBe("ok"); // counts on from the new time
    expect(r.take("b", 2, 1000, 100_000)).toBe("ok");
    expect(r.take("b", 2, 1000, 100_000)).toBe("ok");
    expect(r.take("b", 2, 1000, 100_000)).toBe("rate");
  });

  it("tells how long until a key can take a token, and for a refused newcomer when a bucket can be idle", () => {
    const r = new RateLimiter(2);
    expect(r.waitMs("a", 0)).toBe(0); // unknown key, room
    expect(["ok", "ok", "ok", "ok"].map(() => r.take("a", 4, 1000, 0))).toEqual(["ok", "ok", "ok", "ok"]);
    expect(r.take("a", 4, 1000, 0)).toBe("rate");
    expect(r.waitMs("a", 0)).toBe(250); // one token per 250 ms
    expect(r.waitMs("a", 100)).toBe(150);
    expect(r.waitMs("a", 250)).toBe(0);
    expect(r.take("b", 4, 1000, 0)).toBe("ok");
    // Both buckets busy: "c" is refused (not let through uncounted) until "b" refills at 250 ms.
    expect(r.take("c", 4, 1000, 10)).toBe("full");
    expect(r.waitMs("c", 10)).toBe(240);
    expect(r.take("c", 4, 1000, 250)).toBe("ok");
    expect(r.take("a", 4, 1000, 250)).toBe("ok"); // "a" kept its count: one token back, taken
    expect(r.take("a", 4, 1000, 250)).toBe("rate");
  });

  it("stays within maxKeys under a stream of new identities", () => {
    const r = new RateLimiter(16);
    let now = 0;
    let full = 0;
    for (let i = 0; i < 10_000; i++) {
      now += 1;
      if (r.take(`id${i}`, 5, 100, now) === "full") full++;
      expect(r.size).toBeLessThanOrEqual(16);
    }
    // One token used refills in 20 ms, so about 16 of every 20 newcomers find room.
    expect(full).toBeGreaterThan(0);
    expect(full).toBeLessThan(10_000 / 2);
  });
});
