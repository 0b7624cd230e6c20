import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPairSync, sign } from "node:crypto";
import mqtt from "mqtt";
import { canonicalize } from "../../agent/core/canonical";
import { Runtime } from "../../agent/runtime";
import { silent, until } from "../helpers/fixture";
import { aedesSite, startReceiver, type Cleanups } from "../helpers/soc-rig";

// Acknowledgements free rows: whoever can write to a gateway's ack topic could have it delete
// events the SOC never received. A forged ack was ignored, and said so only in the local log.
describe("an acknowledgement that is not the SOC's", () => {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("frees nothing, and the SOC gets a finding naming the topic and why, once for a retained forgery", async () => {
    const { site, broker } = await aedesSite(cleanups, { "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "300", "simulate.events_per_s": "50", "upstream.soc_ack_timeout_ms": "1000" });
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    const boot = rt.recorder.bootEpoch;
    await until(() => rt.outbox.stats().depth >= 20, 20_000, "20 events in the outbox");
    // Signed with a key that is not the SOC's: all of this boot "acknowledged", retained.
    const forger = generateKeyPairSync("ed25519");
    const body = { v: 1, device: "gw-test-1", boot, seq: 1_000_000 };
    const sig = sign(null, Buffer.from(canonicalize(body)), forger.privateKey).toString("base64");
    const c = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    cleanups.push(() => c.endAsync());
    const forge = (retain: boolean) => c.publishAsync("gatewarden/v1/gw-test-1/ack", JSON.stringify({ ...body, sig }), { qos: 1, retain });
    await forge(true);
    const acks = () => (rt.status().upstream as { acks: { bad_acks: number } }).acks;
    await until(() => acks().bad_acks >= 1, 20_000, "the forged ack to arrive");
    expect(rt.outbox.stats().depth).toBeGreaterThanOrEqual(20); // nothing freed
    // The SOC, once it listens, gets the finding (with the events the forgery tried to erase).
    const { lines } = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    const found = () => lines.filter((l) => !("problem" in l) && (l.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "ack_refused") as unknown as { class: string; severity: number; ocsf: { message: string; unmapped: Record<string, unknown> } }[];
    await until(() => found().length > 0, 20_000, "the finding to reach the SOC");
    expect(found()[0]).toMatchObject({ class: "finding", severity: 4, ocsf: { unmapped: { topic: "gatewarden/v1/gw-test-1/ack", reason: "ack signature does not verify with the SOC's ack key", count: 1 } } });
    expect(found()[0]!.ocsf.message).toMatch(/^Refused an acknowledgement on gatewarden\/v1\/gw-test-1\/ack \(ack signature does not verify with the SOC's ack key\): it is not signed with the SOC's ack key: .*; no event was deleted for it$/);
    // Forged again (as a retained one comes back at every reconnect): counted, not reported again.
    await forge(false);
    await until(() => acks().bad_acks >= 2, 20_000, "the second forged ack to arrive");
    // The SOC's own acks still free rows, and its output holds one finding.
    await until(() => rt.outbox.stats().depth < 20, 20_000, "the SOC's acks to free rows");
    expect(found()).toHaveLength(1);
  });
});
