import { readFileSync, rmSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { makePki, OPENSSL, type Pki } from "./_certs";
import { RawClient, startRig, type Rig } from "./_harness";

/** Budget of the tests: 20 requests/s per client, bursts of 20. */
const RATE = 20;
/** Requests per connection: under the budget alone, over it for two connections together. */
const EACH = 15;

const rigs: Rig[] = [];
const clients: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const r of rigs.splice(0)) await r.close();
});

const roles = { units: [1], functions: ["read-only" as const], read: { holding: ["0-9"] } };

/** `EACH` pipelined reads on each client; resolves with the answers and the time the last took. */
async function burst(...cs: RawClient[]): Promise<{ answers: string[]; ms: number }> {
  const t0 = performance.now();
  const answers = await Promise.all(cs.flatMap((c) => Array.from({ length: EACH }, () => c.request(1, "03 0000 0001", 5000))));
  return { answers, ms: performance.now() - t0 };
}

/**
 * `a` alone stays within the budget; after it refilled, `a` and `b` (same client) together
 * exceed it and wait, while `other` (another client) at the same time does not.
 */
async function sharedBudget(rig: Rig, a: RawClient, b: RawClient, other: RawClient): Promise<void> {
  const alone = await burst(a);
  expect(alone.answers.every((x) => x === "03020000")).toBe(true);
  expect(alone.ms).toBeLessThan(300);
  await new Promise((r) => setTimeout(r, 1000)); // refilled
  const [together, others] = await Promise.all([burst(a, b), burst(other)]);
  // 2 × 15 = 30 requests against a burst of 20: the last 10 come at 20/s. Nothing is dropped.
  expect(together.answers).toHaveLength(2 * EACH);
  expect(together.answers.every((x) => x === "03020000")).toBe(true);
  expect(together.ms).toBeGreaterThanOrEqual(400);
  expect(others.answers.every((x) => x === "03020000")).toBe(true);
  expect(others.ms).toBeLessThan(300);
  // As before: back-pressure only, no exception, no event.
  expect(rig.sink.drafts.filter((d) => d.ocsf.class_uid === 4001 && d.ocsf.activity_id === 5)).toEqual([]);
  expect(rig.service.status().listeners[0]!.denied).toBe(0);
}

describe("limits.max_requests_per_s is one budget per client across its connections", () => {
  it("plain TCP: two connections from one address share it; another address is not held up", async () => {
    const rig = await startRig({ identities: [{ match: { address: ["127.0.0.1", "127.0.0.2"] }, role: "r" }], roles: { r: roles } }, { limits: { max_requests_per_s: RATE } });
    rigs.push(rig);
    const a = await RawClient.connect(rig.port);
    const b = await RawClient.connect(rig.port);
    const other = await RawClient.connect(rig.port, "127.0.0.2");
    clients.push(a, b, other);
    await sharedBudget(rig, a, b, other);
  });
});

describe.skipIf(!OPENSSL)("limits.max_requests_per_s on Modbus/TCP Security (needs the openssl binary)", () => {
  let pki: Pki | undefined;
  afterAll(() => {
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  it("two connections with one client certificate share it; another certificate from the same address is not held up", async () => {
    pki = makePki();
    const p = pki;
    const rig = await startRig(
      { roles: { operator: roles, engineer: roles } },
      { listeners: [{ name: "secure", type: "tls", listen: "127.0.0.1:0", tls: { cert_file: p.serverCert, key_file: p.serverKey, ca_file: p.ca, reload_check_ms: 0 } }], limits: { max_requests_per_s: RATE } },
    );
    rigs.push(rig);
    const open = (who: string) =>
      new Promise<RawClient>((resolve, reject) => {
        const creds = p.client(who);
        const s = tlsConnect({ host: "127.0.0.1", port: rig.port, ca: readFileSync(p.ca), servername: "localhost", cert: readFileSync(creds.cert), key: readFileSync(creds.key) });
        s.once("secureConnect", () => resolve(new RawClient(s)));
        s.once("error", reject);
      });
    const a = await open("engineer");
    const b = await open("engineer");
    const other = await open("operator");
    clients.push(a, b, other);
    await sharedBudget(rig, a, b, other);
  });
});
