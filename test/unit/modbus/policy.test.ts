import { describe, expect, it } from "vitest";
import { isDaemonError } from "../../../agent/core/errors";
import { decideFailClosed, DENY_ALL } from "../../../protocols/policy";
import type { PeerIdentity } from "../../../protocols/modbus/policy/identity";
import { parseRequest, type ModbusRequest } from "../../../protocols/modbus/codec/pdu";
import { ModbusPolicy } from "../../../protocols/modbus/policy/engine";
import { parsePolicy, parsePolicyText, type PolicyInput } from "../../../protocols/modbus/policy/schema";
import { WindowStore } from "../../../protocols/modbus/policy/window-store";

const scada: PeerIdentity = { transport: "tcp", address: "10.1.0.10" };
const stranger: PeerIdentity = { transport: "tcp", address: "10.9.9.9" };
const eng: PeerIdentity = { transport: "tls", address: "10.1.0.50", role: "engineer", fingerprint: "AA:BB", subject: "CN=eng1" };

const policyInput: PolicyInput = {
  identities: [
    { match: { address: ["10.1.0.0/24", "::ffff:10.1.0.0/120"] }, role: "scada" },
    { match: { subject: "CN=laptop7" }, role: "engineer" },
    { match: { fingerprint: "sha256:cc:dd" }, role: "engineer" },
  ],
  roles: {
    scada: { units: [1, "10-12"], functions: ["read-only"], read: { holding: ["0-99", "200-299"], input: ["0-9"], coil: ["0-15"], file: [{ file: 4, records: "0-99" }] } },
    engineer: {
      units: [1],
      functions: ["read-write", 8],
      diagnostics: [0, 4],
      read: { holding: ["0-299"] },
      write: { holding: ["100-109"], coil: ["0-3"], file: [{ file: 4, records: "0-9" }] },
      values: [
        { table: "holding", address: "100-101", min: 0, max: 5000 },
        { table: "holding", address: 102, type: "int16", min: -10, max: 10 },
        { table: "holding", address: 103, allowed: [1, 2, 4] },
        { table: "coil", address: 3, allowed: [0] },
      ],
      write_rate: { max: 3, interval_ms: 1000 },
      write_window: "required",
    },
  },
};

function setup(now = { t: 1_000_000 }) {
  const store = new WindowStore({ roles: () => ["scada", "engineer"], now: () => now.t });
  const pol = new ModbusPolicy(parsePolicy(policyInput), store);
  const ask = (identity: PeerIdentity, unit: number, pdu: string) => {
    const p = parseRequest(Buffer.from(pdu.replace(/\s+/g, ""), "hex"));
    if (!p.ok) throw new Error(`bad test PDU ${pdu}: ${p.reason}`);
    return decideFailClosed(pol, { identity, unit, req: p.req, now: now.t });
  };
  return { pol, store, ask, now };
}

describe("Modbus policy: identities", () => {
  it("denies unknown clients and maps addresses, subjects, fingerprints and certificate roles", () => {
    const { ask } = setup();
    expect(ask(stranger, 1, "03 0000 0001")).toMatchObject({ allow: false, rule: "identities" });
    expect(ask(scada, 1, "03 0000 0001")).toMatchObject({ allow: true, rule: "roles.scada.read.holding" });
    expect(ask({ transport: "tcp", address: "::ffff:10.1.0.7" }, 1, "03 0000 0001").allow).toBe(true);
    expect(ask({ transport: "tls", address: "1.2.3.4", subject: "CN=laptop7", fingerprint: "00" }, 1, "03 0000 0001").allow).toBe(true);
    expect(ask({ transport: "tls", address: "1.2.3.4", fingerprint: "CC:DD" }, 1, "03 0000 0001").allow).toBe(true);
    expect(ask({ transport: "tls", address: "1.2.3.4", role: "engineer", fingerprint: "00" }, 1, "03 0000 0001").allow).toBe(true);
    expect(ask({ transport: "tls", address: "1.2.3.4", role: "admin", fingerprint: "00" }, 1, "03 0000 0001")).toMatchObject({ allow: false, rule: "identities" });
    // Address-only entries match plain TCP only: a TLS client from the SCADA subnet is not scada.
    expect(ask({ transport: "tls", address: "10.1.0.10", fingerprint: "00" }, 1, "03 0000 0001")).toMatchObject({ allow: false, rule: "identities" });
    const any = new ModbusPolicy(parsePolicy({ identities: [{ match: { address: "10.1.0.0/24", transport: "any" }, role: "r" }], roles: { r: { units: [1], functions: [3], read: { holding: ["0"] } } } }));
    expect(any.decide({ identity: { transport: "tls", address: "10.1.0.10", fingerprint: "00" }, unit: 1, req: { fc: 3, address: 0, quantity: 1 }, now: 0 }).allow).toBe(true);
  });
  it("denies every request of a certificate whose role is unusable (Modbus/TCP Security)", () => {
    const { ask } = setup();
    expect(ask({ transport: "tls", address: "10.1.0.10", roleError: "certificate carries 2 roles" }, 1, "03 0000 0001")).toMatchObject({ allow: false, rule: "tls.role" });
  });
});

describe("Modbus policy: units, functions, addresses", () => {
  const { ask } = setup();
  it.each([
    [1, "03 0000 0001", true, "roles.scada.read.holding"],
    [12, "03 0000 0001", true, "roles.scada.read.holding"],
    [13, "03 0000 0001", false, "roles.scada.units"],
    [2, "03 0000 0001", false, "roles.scada.units"],
    [1, "03 0063 0001", true, "roles.scada.read.holding"], // 99: last allowed
    [1, "03 0064 0001", false, "roles.scada.read.holding"], // 100: first denied
    [1, "03 0062 0002", true, "roles.scada.read.holding"],
    [1, "03 0063 0002", false, "roles.scada.read.holding"], // 99-100 straddles the edge
    [1, "03 0000 007d", false, "roles.scada.read.holding"], // 0-124 covers the 100-199 gap
    [1, "03 00c8 0064", true, "roles.scada.read.holding"], // 200-299
    [1, "04 0009 0001", true, "roles.scada.read.input"],
    [1, "04 000a 0001", false, "roles.scada.read.input"],
    [1, "02 0000 0001", false, "roles.scada.read.discrete_input"],
    [1, "01 000f 0001", true, "roles.scada.read.coil"],
    [1, "06 0000 0001", false, "roles.scada.functions"],
    [1, "10 0000 0001 02 0001", false, "roles.scada.functions"],
    [1, "17 0000 0001 0000 0001 02 0001", false, "roles.scada.functions"],
    [1, "08 0000 0000", false, "roles.scada.functions"],
    [1, "2b 0e 01 00", false, "roles.scada.functions"],
    [1, "07", true, "roles.scada.functions"],
    [1, "11", true, "roles.scada.functions"],
    [1, "18 0010", true, "roles.scada.read.holding"],
    [1, "14 07 06 0004 0063 0001", true, "roles.scada.read.file"],
    [1, "14 07 06 0004 0063 0002", false, "roles.scada.read.file"],
    [1, "14 07 06 0005 0000 0001", false, "roles.scada.read.file"],
  ] as const)("scada unit %i %s -> %s (%s)", (unit, pdu, allow, rule) => {
    expect(ask(scada, unit, pdu)).toMatchObject({ allow, rule });
  });
});

describe("Modbus policy: writes", () => {
  it("checks write ranges, FC 23 as read and write, value bounds, FC 8 sub-functions", () => {
    const now = { t: 1_000_000 };
    const { ask, store } = setup(now);
    store.openWindow({ role: "engineer", minutes: 5, reason: "test" });
    const ask2 = ask;
    const cases: [string, boolean, string][] = [
      ["06 0064 1388", true, "roles.engineer.write.holding"], // 100 = 5000: max allowed
      ["06 0064 1389", false, "roles.engineer.values[0]"], // 5001
      ["06 006d 0001", true, "roles.engineer.write.holding"], // 109: last writable
      ["06 006e 0001", false, "roles.engineer.write.holding"], // 110: first outside
      ["06 0063 0001", false, "roles.engineer.write.holding"], // 99: just below
      ["10 006c 0002 04 0001 0001", true, "roles.engineer.write.holding"], // 108-109
      ["10 006d 0002 04 0001 0001", false, "roles.engineer.write.holding"], // 109-110 straddles
    ];
    for (const [pdu, allow, rule] of cases) {
      now.t += 1000; // under the write rate
      expect(ask2(eng, 1, pdu), pdu).toMatchObject({ allow, rule });
    }
    store.dispose();
  });
});

describe("Modbus policy: value bounds, windows, rates", () => {
  it("applies min/max, signed types, allowed sets, coils, FC 16 per register and FC 22 masks", () => {
    const now = { t: 5_000_000 };
    const { ask, store } = setup(now);
    store.openWindow({ role: "engineer", minutes: 60, reason: "tuning" });
    const step = () => (now.t += 1000); // stay under the rate limit
    const check = (pdu: string, allow: boolean, rule?: string) => {
      step();
      const d = ask(eng, 1, pdu);
      expect(d.allow, pdu).toBe(allow);
      if (rule) expect(d.rule).toBe(rule);
    };
    check("06 0066 000a", true); // int16 102 = 10
    check("06 0066 fff6", true); // -10
    check("06 0066 fff5", false, "roles.engineer.values[1]"); // -11
    check("06 0066 000b", false, "roles.engineer.values[1]");
    check("06 0067 0004", true); // allowed set
    check("06 0067 0003", false, "roles.engineer.values[2]");
    check("05 0003 0000", true); // coil 3 may only be switched off
    check("05 0003 ff00", false, "roles.engineer.values[3]");
    check("05 0002 ff00", true);
    check("10 0064 0002 04 0000 1388", true);
    check("10 0064 0002 04 0000 1389", false, "roles.engineer.values[0]");
    check("0f 0000 0004 01 07", true); // coils 0..2 on, 3 off
    check("0f 0000 0004 01 0f", false, "roles.engineer.values[3]");
    check("16 0064 0000 0010", true); // and=0: result is or_mask = 16
    check("16 0064 00ff 0010", false, "roles.engineer.values");
    check("16 0068 00ff 0010", true); // 104 has no bound
    check("17 0000 0001 0064 0001 02 0001", true);
    check("17 0000 0001 0064 0001 02 ffff", false, "roles.engineer.values[0]");
    check("17 012c 0001 0064 0001 02 0001", false, "roles.engineer.read.holding"); // reads 300
    check("17 0000 0001 006e 0001 02 0001", false, "roles.engineer.write.holding"); // writes 110
    check("15 0d 06 0004 0009 0003 0001 0002 0003", false, "roles.engineer.write.file"); // records 9..11
    check("15 0d 06 0004 0007 0003 0001 0002 0003", true);
    check("08 0004 0000", true); // listen-only explicitly allowed for this role
    check("08 0001 0000", false, "roles.engineer.diagnostics");
    check("08 000a 0000", false, "roles.engineer.diagnostics");
  });

  it("denies writes outside a window, allows inside, and denies again when it expires", () => {
    const now = { t: 10_000_000 };
    const { ask, store } = setup(now);
    expect(ask(eng, 1, "06 0064 0001")).toMatchObject({ allow: false, rule: "roles.engineer.write_window" });
    expect(ask(eng, 1, "03 0064 0001").allow).toBe(true); // reads need no window
    const w = store.openWindow({ role: "engineer", minutes: 1, reason: "setpoint change" });
    expect(ask(eng, 1, "06 0064 0001").allow).toBe(true);
    now.t += 59_999;
    expect(ask(eng, 1, "06 0064 0001").allow).toBe(true);
    now.t += 1;
    expect(ask(eng, 1, "06 0064 0001")).toMatchObject({ allow: false, rule: "roles.engineer.write_window" });
    store.sweep();
    expect(store.list()).toEqual([]);
    const w2 = store.openWindow({ role: "engineer", minutes: 5, reason: "again" });
    expect(w2.id).not.toBe(w.id);
    store.closeWindow({ id: w2.id });
    expect(ask(eng, 1, "06 0064 0001").allow).toBe(false);
    store.dispose();
  });

  it("rate-limits writes per identity and refills over time", () => {
    const now = { t: 20_000_000 };
    const { ask, store } = setup(now);
    store.openWindow({ role: "engineer", minutes: 60, reason: "rate" });
    for (let i = 0; i < 3; i++) expect(ask(eng, 1, "06 0064 0001").allow).toBe(true);
    expect(ask(eng, 1, "06 0064 0001")).toMatchObject({ allow: false, rule: "roles.engineer.write_rate" });
    expect(ask({ ...eng, fingerprint: "other" }, 1, "06 0064 0001").allow).toBe(true); // another identity
    expect(ask(eng, 1, "03 0064 0001").allow).toBe(true); // reads are not limited
    now.t += 334;
    expect(ask(eng, 1, "06 0064 0001").allow).toBe(true);
    expect(ask(eng, 1, "06 0064 0001").allow).toBe(false);
    store.dispose();
  });

  it("rejects window requests that are not sane", () => {
    const { store } = setup();
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return isDaemonError(e) ? e.code : "other";
      }
      return "none";
    };
    expect(code(() => store.openWindow({ role: "nobody", minutes: 5, reason: "x" }))).toBe("USAGE");
    expect(code(() => store.openWindow({ role: "engineer", minutes: 0, reason: "x" }))).toBe("USAGE");
    expect(code(() => store.openWindow({ role: "engineer", minutes: 100_000, reason: "x" }))).toBe("USAGE");
    expect(code(() => store.openWindow({ role: "engineer", minutes: 5, reason: " " }))).toBe("USAGE");
  });
});

describe("Modbus policy: fail closed and schema", () => {
  it("denies when the decision point throws or nothing is configured", () => {
    const req: ModbusRequest = { fc: 3, address: 0, quantity: 1 };
    const boom = { decide: () => { throw new Error("boom"); } };
    expect(decideFailClosed(boom, { identity: scada, unit: 1, req, now: 0 })).toMatchObject({ allow: false, rule: "policy-error" });
    expect(decideFailClosed(DENY_ALL, { identity: scada, unit: 1, req, now: 0 })).toMatchObject({ allow: false, rule: "default-deny" });
    const empty = new ModbusPolicy(parsePolicy({}));
    expect(empty.decide({ identity: scada, unit: 1, req, now: 0 }).allow).toBe(false);
  });

  it.each([
    ["roles:\n  a:\n    units: [1]\n    functions: [read-only]\n    read: { holding: ['10-5'] }\n", "roles.a.read.holding.0", 5],
    ["roles:\n  a:\n    units: [300]\n    functions: [3]\n", "roles.a.units.0", 3],
    ["roles:\n  a:\n    units: [1]\n    functions: [read-all]\n", "roles.a.functions.0", 4],
    ["roles:\n  a:\n    units: [1]\n    functions: [3]\n    colour: red\n", "roles.a.colour", 5],
    ["identities:\n  - match: { address: 10.0.0.1 }\n    role: ghost\n", "identities.0.role", 3],
    ["roles:\n  a:\n    units: [1]\n    functions: [3]\n    values: [{ table: holding, address: 1 }]\n", "roles.a.values.0", 5],
    // An address that is not one: refused here, not ERR_INVALID_ADDRESS when the proxy starts.
    ["identities:\n  - match: { address: 10.0.0.300 }\n    role: a\nroles:\n  a: { units: [1], functions: [3] }\n", "identities.0.match.address", 2],
    ["identities:\n  - match: { address: [10.0.0.1, 10.0.0.0/33] }\n    role: a\nroles:\n  a: { units: [1], functions: [3] }\n", "identities.0.match.address.1", 2],
    // min above max would deny every write.
    ["roles:\n  a:\n    units: [1]\n    functions: [6]\n    values:\n      - { table: holding, address: 1, min: 4500, max: 0 }\n", "roles.a.values.0.max", 6],
    ["roles: [\n", "", 2],
  ])("names file, line and key of a bad policy (%#)", (text, path, line) => {
    try {
      parsePolicyText(text, "p.yaml");
      expect.unreachable();
    } catch (e) {
      expect(isDaemonError(e, "POLICY_INVALID")).toBe(true);
      const issues = (e as { issues: { file: string; path: string; line?: number }[] }).issues;
      expect(issues[0]).toMatchObject({ file: "p.yaml", path, line });
    }
  });
});
