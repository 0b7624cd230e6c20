import { afterEach, describe, expect, it } from "vitest";
import { cpSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setConfigValue } from "../../agent/config/edit";
import { loadConfig } from "../../agent/config/load";
import { exportTrust, generateDeviceKey } from "../../agent/keys/identity";
import { Runtime } from "../../agent/runtime";
import { TrustStore } from "../../agent/soc/trust";
import { verifyFile } from "../../agent/soc/verify-file";
import { gw } from "../helpers/cli";
import { SocReceiver } from "../../agent/soc/receive";
import type { OutLine, ProblemLine } from "../../agent/soc/verifier";
import { account, unexpectedProblems } from "../helpers/daemon";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";
import { Mosquitto, MOSQUITTO } from "../helpers/mosquitto";
import { havePeer } from "../helpers/peers";
import { forwarderOf } from "../helpers/runtime";

const skip = !havePeer(MOSQUITTO ?? "/usr/sbin/mosquitto");
const why = skip ? " [skipped: needs mosquitto (apt install mosquitto)]" : "";
const DEVICE = "gw-e2e-1";

type Marks = { broker_acked: { boot: number; seq: number } | null; soc_acked: { boot: number; seq: number } | null };

/** End-to-end acknowledgement against Mosquitto: what a broker loses, the SOC still gets. */
describe("end-to-end acks: gateway -> Mosquitto -> SOC receiver", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function setup(settings: Record<string, string>) {
    const t = tempDir("gw-e2e-");
    cleanups.push(t.cleanup);
    const mq = new Mosquitto({ dir: t.dir });
    await mq.start();
    cleanups.push(() => mq.stop());
    const site = makeSite(t.dir, {
      device: DEVICE,
      settings: { "upstream.url": mq.url, "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "400", "simulate.events_per_s": "200", "upstream.max_batch_events": "20", ...settings },
    });
    const lines: OutLine[] = [];
    const receiver = (gapTimeoutMs = 60_000) => {
      const rx = new SocReceiver({ broker: mq.url, dir: site.socDir, out: join(t.dir, "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-1", protocolVersion: 5, gapTimeoutMs, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
      cleanups.push(() => rx.stop());
      return rx;
    };
    const rt = new Runtime(site.load(), silent);
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    return { t, mq, site, rt, lines, receiver, marks: () => rt.status().upstream as Marks };
  }

  /** Stops the sources, waits until the SOC has acknowledged everything, stops; returns the last seq. */
  async function finish(rt: Runtime, marks: () => Marks): Promise<number> {
    rt.stopSources();
    await until(() => (rt.recorder.flush(), rt.outbox.stats().depth === 0), 30_000, `the SOC to acknowledge every event (outbox depth ${rt.outbox.stats().depth}, marks ${JSON.stringify(marks())})`);
    const last = marks().soc_acked!;
    expect(marks().broker_acked).toEqual(last);
    await rt.stop("test", 10_000);
    return last.seq;
  }

  it.skipIf(skip)(`a receiver started after the gateway loses nothing with SOC acks${why}`, async () => {
    const { rt, lines, receiver, marks } = await setup({ "upstream.soc_ack_timeout_ms": "1500" });
    await rt.start();
    // The broker acknowledges and drops what no one subscribed to yet.
    await until(() => (marks().broker_acked?.seq ?? -1) >= 150, 20_000, "the broker to acknowledge 150 events with no subscriber");
    expect(marks().soc_acked).toBeNull();
    expect(rt.outbox.stats().depth).toBeGreaterThanOrEqual(150); // nothing freed without the SOC
    await receiver().start();
    await until(() => (marks().soc_acked?.seq ?? -1) >= 300, 30_000, `the SOC to acknowledge past seq 300 (${JSON.stringify(marks())})`);
    const last = await finish(rt, marks);
    const a = account(lines, last);
    expect(unexpectedProblems(a, [])).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(a.events.length).toBe(rt.recorder.counters.committed);
    expect((rt.status().upstream as { acks: { resends: number } }).acks.resends).toBeGreaterThan(0); // the lost start was sent again
  });

  it.skipIf(skip)(`with broker acks, a receiver started after the gateway reports the lost start as a gap from seq 0${why}`, async () => {
    const { rt, lines, receiver, marks } = await setup({ "upstream.ack": "broker" });
    await rt.start();
    await until(() => (marks().broker_acked?.seq ?? -1) >= 150, 20_000, "the broker to acknowledge 150 events with no subscriber");
    await receiver(500).start();
    let gap: ProblemLine | undefined;
    await until(() => (gap = lines.find((l): l is ProblemLine => "problem" in l && l.problem === "gap")) !== undefined, 20_000, "a gap line");
    const first = lines.find((l) => !("problem" in l)) as { seq: number } | undefined;
    expect(gap).toMatchObject({ device: DEVICE, boot: rt.recorder.bootEpoch, first: 0, last: first!.seq - 1 });
    expect(first!.seq).toBeGreaterThan(150);
    expect(marks().soc_acked).toBeNull();
  });

  it.skipIf(skip)(`a broker restarted without persistence in the middle of a run loses nothing${why}`, async () => {
    const { mq, rt, lines, receiver, marks } = await setup({ "upstream.soc_ack_timeout_ms": "1500" });
    const rx = receiver();
    await rx.start();
    await rt.start();
    await until(() => (marks().soc_acked?.seq ?? -1) >= 100, 20_000, "the SOC to acknowledge 100 events");
    await mq.restart(); // forgets the receiver's session and everything queued for it
    const after = rt.recorder.counters.committed;
    await until(() => (marks().soc_acked?.seq ?? -1) >= after + 200, 30_000, `the SOC to acknowledge 200 events after the restart (${JSON.stringify(marks())})`);
    const last = await finish(rt, marks);
    const a = account(lines, last);
    expect(unexpectedProblems(a, [])).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(forwarderOf(rt).counters.reconnects).toBeGreaterThan(0);
  });

  it.skipIf(skip)(`a copied key directory on a second host is reported online as a clone naming both boots${why}`, async () => {
    const { t, rt, lines, receiver, site } = await setup({ "simulate.events_per_s": "20" });
    await receiver().start();
    await rt.start();
    const boot1 = rt.recorder.bootEpoch;
    await until(() => lines.some((l) => !("problem" in l) && l.boot === boot1), 10_000, "the first host's events at the SOC");
    // The second host: the same identity (keys copied), its own outbox, its own client id.
    const host2 = join(t.dir, "host-2");
    cpSync(site.gwDir, host2, { recursive: true, filter: (src) => !src.includes(`${join(site.gwDir, "data")}`) });
    const cfg2 = join(host2, "gatewarden.yaml");
    setConfigValue(cfg2, "upstream.client_id", "second-host");
    await until(() => Math.floor(Date.now() / 1000) > boot1, 2000, "the next second (a later boot epoch)");
    const rt2 = new Runtime(loadConfig(cfg2), silent);
    cleanups.push(() => rt2.stop("cleanup", 0).catch(() => undefined));
    await rt2.start();
    const boot2 = rt2.recorder.bootEpoch;
    let clone: ProblemLine | undefined;
    await until(() => (clone = lines.find((l): l is ProblemLine => "problem" in l && l.problem === "clone")) !== undefined, 15_000, "a clone line");
    expect(clone).toMatchObject({ device: DEVICE, boots: [boot1, boot2] });
  });

  it.skipIf(skip)(`trust add of a second key is refused without --replace; with it, one trust_changed line, and both keys verify their boots${why}`, async () => {
    const { t, rt, lines, receiver, marks, site } = await setup({ "simulate.events_per_s": "50" });
    await receiver().start();
    await rt.start();
    const boot1 = rt.recorder.bootEpoch;
    await until(() => (marks().soc_acked?.seq ?? -1) >= 20, 15_000, "the SOC to acknowledge 20 events");
    await finish(rt, marks);
    // The gateway gets a new key (re-initialised); the SOC is told with a new trust file.
    const keyFile = join(site.gwDir, "keys", "device.key");
    rmSync(keyFile);
    rmSync(join(site.gwDir, "keys", "device.pub"));
    const key = generateDeviceKey(keyFile, join(site.gwDir, "keys", "device.pub"));
    const trustFile = join(t.dir, "new.trust.json");
    writeFileSync(trustFile, JSON.stringify(exportTrust(DEVICE, key)));
    const refused = gw(["soc", "trust", "add", trustFile, "--dir", site.socDir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error\[TRUST_CONFLICT\].*--replace/);
    const replaced = gw(["soc", "trust", "add", trustFile, "--dir", site.socDir, "--replace", "--json"]);
    expect(replaced.code, replaced.stderr).toBe(0);
    expect(JSON.parse(replaced.stdout)).toMatchObject({ device: DEVICE, from_boot: boot1 + 1 });
    const changed = () => lines.filter((l): l is ProblemLine => "problem" in l && l.problem === "trust_changed");
    await until(() => changed().length > 0, 15_000, "a trust_changed line");
    expect(changed()[0]).toMatchObject({ device: DEVICE, action: "replace", new_fingerprint: JSON.parse(replaced.stdout).fingerprint, old_fingerprint: JSON.parse(replaced.stdout).replaced });
    const listed = JSON.parse(gw(["soc", "trust", "list", "--dir", site.socDir, "--json"]).stdout) as { device: string; keys: unknown[] }[];
    expect(listed).toEqual([expect.objectContaining({ device: DEVICE, keys: [expect.anything(), expect.anything()] })]);
    // The next boot signs with the new key: verified online and offline, the old boot too.
    const rt2 = new Runtime(site.load(), silent);
    cleanups.push(() => rt2.stop("cleanup", 0).catch(() => undefined));
    await rt2.start();
    const m2 = () => rt2.status().upstream as Marks;
    await until(() => (m2().soc_acked?.boot ?? 0) === rt2.recorder.bootEpoch && m2().soc_acked!.seq >= 20, 15_000, "the SOC to acknowledge the new boot");
    const last = await finish(rt2, m2);
    const a = account(lines, last);
    expect(unexpectedProblems(a, ["trust_changed"])).toEqual([]);
    expect(changed().length).toBe(1);
    expect(a.missing).toEqual([]);
    const v = await verifyFile(join(t.dir, "soc.jsonl"), new TrustStore(site.socDir));
    expect(v.problems).toEqual({});
    expect(v.verified).toBe(a.events.length);
  });
});
