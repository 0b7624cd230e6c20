import { describe, expect, it } from "vitest";
import { opcuaConfigSchema } from "../../../protocols/opcua/config";
import { FrontPolicy, OpenWindows, type FrontNode } from "../../../protocols/opcua/front-policy";
import { frontRoleWrites } from "../../../protocols/opcua/front-config";
import { authenticate, hashPassword, verifyPassword, writeUsers } from "../../../protocols/opcua/front-users";
import { tempDir } from "../../helpers/fixture";
import { join } from "node:path";
import { chmodSync } from "node:fs";

const node = (path: string, kind: FrontNode["kind"] = "variable", id = `ns=2;s=${path.replace(/\//g, ".")}`): FrontNode => ({ id, uriId: id.replace("ns=2", "nsu=urn:plc"), path, namespace: "urn:plc", kind });
const nodes = [node("Plant", "object"), node("Plant/Tank", "object"), node("Plant/Tank/Level"), node("Plant/Pump", "object"), node("Plant/Pump/Speed"), node("Plant/Pump/Start", "method"), node("Plant/Pump/Reset", "method"), node("Other/X")];
const byPath = (p: string) => nodes.find((n) => n.path === p)!;

function policy(roles: Record<string, unknown>) {
  const c = opcuaConfigSchema.parse({ servers: [{ name: "plc", endpoint: "opc.tcp://10.0.0.5:4840" }], front: { server: "plc", roles } });
  const p = new FrontPolicy(c.front!.roles);
  p.bind(nodes);
  return p;
}
const ask = (p: FrontPolicy, role: string | undefined, path: string, action: "browse" | "read" | "subscribe" | "write" | "call", value?: unknown, now = 0) => p.decide({ user: "u", role, node: path ? byPath(path) : undefined, action, value, now });

describe("OPC UA front policy", () => {
  const p = policy({
    op: { nodes: [{ browse_path: "Plant/Tank", allow: ["browse", "read", "subscribe"] }, { node_id: "nsu=urn:plc;s=Plant.Pump.Speed", allow: ["read", "write"], min: 0, max: 1500 }], methods: ["Plant/Pump/Start"], write_rate: { max: 2, interval_ms: 1000 } },
    ns: { nodes: [{ namespace: "urn:plc", allow: ["browse"] }] },
  });

  it("denies by default: no role, an unknown role, a node no rule names", () => {
    expect(ask(p, undefined, "Plant/Tank/Level", "read")).toMatchObject({ allow: false, rule: "default-deny", status: "BadUserAccessDenied" });
    expect(ask(p, "ghost", "Plant/Tank/Level", "read")).toMatchObject({ allow: false });
    expect(ask(p, "op", "Other/X", "read")).toMatchObject({ allow: false, reason: "role op may not read Other/X" });
    expect(ask(p, "op", "Plant/Tank/Level", "write", 1)).toMatchObject({ allow: false });
  });

  it("a browse path covers the node and all below it; the folders above may be browsed only", () => {
    expect(ask(p, "op", "Plant/Tank/Level", "subscribe")).toMatchObject({ allow: true, rule: "roles.op.nodes[0]" });
    expect(ask(p, "op", "Plant", "browse").allow).toBe(true);
    expect(ask(p, "op", "Plant", "read").allow).toBe(false);
    expect(ask(p, "op", "Plant/Pump", "browse").allow).toBe(true);
  });

  it("bounds a write (BadOutOfRange) and counts the write rate per user", () => {
    expect(ask(p, "op", "Plant/Pump/Speed", "write", 1501)).toMatchObject({ allow: false, status: "BadOutOfRange", reason: "value 1501 for Plant/Pump/Speed is outside its bounds 0..1500" });
    expect(ask(p, "op", "Plant/Pump/Speed", "write", "fast")).toMatchObject({ allow: false, status: "BadOutOfRange" });
    expect(ask(p, "op", "Plant/Pump/Speed", "write", 1500, 0).allow).toBe(true);
    expect(ask(p, "op", "Plant/Pump/Speed", "write", 0, 1).allow).toBe(true);
    expect(ask(p, "op", "Plant/Pump/Speed", "write", 1, 2)).toMatchObject({ allow: false, rule: "roles.op.write_rate", status: "BadTooManyOperations" });
    expect(ask(p, "op", "Plant/Pump/Speed", "write", 1, 2000).allow).toBe(true);
  });

  it("counts each user's service requests against the role's request rate", () => {
    const r = policy({ lim: { nodes: [], request_rate: { max: 2, interval_ms: 1000 } }, free: { nodes: [] } });
    expect(r.request("a", "lim", "Read", 0).allow).toBe(true);
    expect(r.request("a", "lim", "Browse", 0).allow).toBe(true);
    expect(r.request("a", "lim", "Read", 1)).toMatchObject({ allow: false, rule: "roles.lim.request_rate", status: "BadTooManyOperations", reason: "user a is over the request rate of role lim (2 per 1000 ms); Read refused" });
    expect(r.request("b", "lim", "Read", 1).allow).toBe(true);
    expect(r.request("a", "lim", "Read", 600).allow).toBe(true);
    for (let i = 0; i < 100; i++) expect(r.request("a", "free", "Read", 600).allow).toBe(true);
  });

  it("a write_window role writes and calls only while a window for it is open", () => {
    const windows = new OpenWindows();
    const c = opcuaConfigSchema.parse({ servers: [{ name: "plc", endpoint: "opc.tcp://10.0.0.5:4840" }], front: { server: "plc", roles: { eng: { nodes: [{ node_id: "nsu=urn:plc;s=Plant.Pump.Speed", allow: ["read", "write"] }], methods: ["Plant/Pump/Start"], write_window: "required" } } } });
    const w = new FrontPolicy(c.front!.roles, windows);
    w.bind(nodes);
    expect(ask(w, "eng", "Plant/Pump/Speed", "write", 1, 1000)).toMatchObject({ allow: false, rule: "roles.eng.write_window", reason: "no write window is open for role eng", status: "BadUserAccessDenied" });
    expect(ask(w, "eng", "Plant/Pump/Speed", "read", undefined, 1000).allow).toBe(true);
    windows.set([{ role: "other", opened_at: 0, expires_at: 5000 }, { role: "eng", opened_at: 900, expires_at: 2000 }]);
    expect(ask(w, "eng", "Plant/Pump/Speed", "write", 1, 1000).allow).toBe(true);
    expect(ask(w, "eng", "Plant/Pump/Start", "call", undefined, 1999).allow).toBe(true);
    expect(ask(w, "eng", "Plant/Pump/Speed", "write", 1, 2000).allow).toBe(false);
    expect(ask(w, "eng", "Plant/Pump/Speed", "write", 1, 899).allow).toBe(false);
    expect(frontRoleWrites(c.front!.roles.eng!)).toBe(true);
    expect(frontRoleWrites({ nodes: [{ browse_path: "Plant", allow: ["browse", "read"] }], methods: [], write_window: "none" })).toBe(false);
  });

  it("calls only methods on the allow-list", () => {
    expect(ask(p, "op", "Plant/Pump/Start", "call", undefined, 5000).allow).toBe(true);
    expect(ask(p, "op", "Plant/Pump/Reset", "call")).toMatchObject({ allow: false, reason: "method Plant/Pump/Reset is not on the allow-list of role op" });
  });

  it("a namespace rule; the front's own nodes are readable, never writable", () => {
    expect(ask(p, "ns", "Other/X", "browse").allow).toBe(true);
    expect(ask(p, "ns", "Other/X", "read").allow).toBe(false);
    expect(ask(p, "ns", "", "read")).toMatchObject({ allow: true, rule: "standard-nodes" });
    expect(ask(p, "ns", "", "write", 1)).toMatchObject({ allow: false, rule: "standard-nodes" });
  });

  it("refuses config mistakes naming the key", () => {
    const issues = (front: unknown) => {
      const r = opcuaConfigSchema.safeParse({ servers: [{ name: "plc", endpoint: "opc.tcp://10.0.0.5:4840" }], front });
      return r.success ? "" : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    };
    expect(issues({ server: "nope" })).toBe("front.server: no opcua server named nope");
    expect(issues({ server: "plc", roles: { r: { nodes: [{ node_id: "ns=2;s=A", browse_path: "A", allow: ["read"] }] } } })).toContain("a node rule needs exactly one of node_id, browse_path, namespace");
    expect(issues({ server: "plc", roles: { r: { nodes: [{ browse_path: "A", allow: ["subscribe"] }] } } })).toContain("front.roles.r.nodes.0.allow: subscribe needs read");
    expect(issues({ server: "plc", roles: { r: { nodes: [{ browse_path: "A", allow: ["read"], max: 5 }] } } })).toContain("front.roles.r.nodes.0.min: min and max bound writes");
    // As in a Modbus policy: bounds that no value fits are a typo, refused on the upper bound.
    expect(issues({ server: "plc", roles: { r: { nodes: [{ browse_path: "A", allow: ["write"], min: 10, max: 5 }] } } })).toBe("front.roles.r.nodes.0.max: min is above max: no value could be written");
    expect(issues({ server: "plc", certificate_users: [{ thumbprint: "ab".repeat(20), role: "x" }] })).toBe("front.certificate_users.0.role: role x is not defined under roles");
    expect(issues({ server: "plc", security_policies: ["Basic256"] })).toContain("front.security_policies.0");
  });
});

describe("OPC UA front users file", () => {
  it("salted scrypt hashes; a wrong password and an unknown user both fail; a loose file is refused", async () => {
    const h = hashPassword("correct horse");
    expect(h).toMatch(/^scrypt\$16384\$8\$1\$/);
    expect(hashPassword("correct horse")).not.toBe(h);
    expect(await verifyPassword("correct horse", h)).toBe(true);
    expect(await verifyPassword("correct hors", h)).toBe(false);
    const t = tempDir();
    const file = join(t.dir, "users.json");
    writeUsers(file, { version: 1, users: { ops: { role: "op", hash: h, changed: "now" } } });
    expect(await authenticate(file, "ops", "correct horse")).toBe("op");
    expect(await authenticate(file, "ops", "wrong")).toBeUndefined();
    expect(await authenticate(file, "nobody", "correct horse")).toBeUndefined();
    chmodSync(file, 0o644);
    await expect(authenticate(file, "ops", "correct horse")).rejects.toMatchObject({ code: "KEY_PERMISSIONS" });
    t.cleanup();
  });
});
