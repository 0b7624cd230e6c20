import { afterAll, beforeAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import type { KeyObject } from "node:crypto";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { exportTrust, generateDeviceKey, loadSocPublicKey } from "../../agent/keys/identity";
import { Runtime } from "../../agent/runtime";
import { RECEIVER_LIMITS } from "../../agent/soc/bounds";
import { SocReceiver } from "../../agent/soc/receive";
import { TrustStore } from "../../agent/soc/trust";
import type { OutLine, ProblemLine } from "../../agent/soc/verifier";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";
import { DeviceStream } from "../helpers/device-stream";
import { deepJson, sealBatch } from "../helpers/hostile";
import { GENESIS_HASH } from "../../agent/core/envelope";

/**
 * The campaign against the SOC receiver, message by message through a real broker (aedes), while
 * a legitimate gateway (a whole Runtime) keeps sending: after each hostile input its events must
 * still arrive verified, the receiver's memory must stay bounded, and what did not verify must
 * leave the receiver's state as it was.
 */
describe("SOC receiver under hostile messages (aedes)", () => {
  const LEGIT = "gw-legit";
  const t = tempDir("gw-hostile-");
  const broker = new EmbeddedBroker();
  const lines: OutLine[] = [];
  const keys = new Map<string, KeyObject>();
  let site: ReturnType<typeof makeSite>;
  let rx: SocReceiver;
  let rt: Runtime;
  let attacker: MqttClient;
  let socPub: Uint8Array;

  const problems = (from = 0) => lines.slice(from).filter((l): l is ProblemLine => "problem" in l);
  const verifiedOf = (device: string, from = 0) => lines.slice(from).filter((l) => !("problem" in l) && l.device === device) as (OutLine & { seq: number; boot: number })[];
  const publish = (device: string, payload: Buffer) => attacker.publishAsync(`gatewarden/v1/${device}/events`, payload, { qos: 1 });
  const startReceiver = async () => {
    rx = new SocReceiver({ broker: broker.url, dir: site.socDir, out: join(t.dir, "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-hostile", protocolVersion: 4, gapTimeoutMs: 60_000, dedupeWindow: 100_000, unknownSummaryMs: 1500, log: silent, onLine: (l) => lines.push(l) });
    await rx.start();
  };
  /** The legitimate gateway's events keep arriving verified after whatever came before. */
  const legitKeepsFlowing = async () => {
    const from = lines.length;
    await until(() => verifiedOf(LEGIT, from).length >= 5, 30_000, `five more verified events from ${LEGIT}`);
  };
  /** Every row of the receiver's state about `device` (read through a second connection). */
  const stateOf = (device: string) => {
    const db = new Database(join(site.socDir, "receiver.db"), { readonly: true });
    try {
      return Object.fromEntries(["devices", "boots", "seen", "covered", "hashes"].map((tb) => [tb, db.prepare(`SELECT * FROM ${tb} WHERE device = ?`).all(device)]));
    } finally {
      db.close();
    }
  };
  const peakRssMb = () => process.resourceUsage().maxRSS / 1024;

  beforeAll(async () => {
    await broker.start();
    site = makeSite(t.dir, { device: LEGIT, settings: { "upstream.url": broker.url, "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "500", "simulate.events_per_s": "50", "heartbeat.interval_ms": "1000" } });
    // Trusted devices whose keys the test holds (one per case, so no case sees another's state).
    for (const d of ["gw-deep", "gw-ranges", "gw-forged", "gw-badsig", "gw-reset", "gw-burst", "gw-mixed"]) {
      const k = generateDeviceKey(join(t.dir, `${d}.key`), join(t.dir, `${d}.pub`));
      keys.set(d, k);
      TrustStore.add(site.socDir, JSON.stringify(exportTrust(d, k)), "test");
    }
    socPub = loadSocPublicKey(join(site.socDir, "soc.pub"));
    await startReceiver();
    rt = new Runtime(site.load(), silent);
    await rt.start();
    attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clientId: "attacker", reconnectPeriod: 0 });
    await legitKeepsFlowing();
  }, 60_000);

  afterAll(async () => {
    await attacker?.endAsync();
    rt?.stopSources();
    await rt?.stop("test", 10_000);
    await rx?.stop();
    await broker.stop();
    t.cleanup();
  });

  it("a decompression bomb (64 MiB from a small batch) is refused after bounded work and memory", async () => {
    const before = peakRssMb();
    const from = lines.length;
    // [[],[],…,[]]: valid JSON, millions of arrays, 64 MiB.
    const bomb = sealBatch(socPub, "gw-deep", Buffer.concat([Buffer.from("["), Buffer.alloc(3 * 22 * 1024 ** 2, "[],"), Buffer.from("[]]")]));
    expect(bomb.length).toBeLessThan(1024 ** 2);
    await publish("gw-deep", bomb);
    await until(() => problems(from).some((p) => p.problem === "malformed" && p.device === "gw-deep"), 30_000, "the bomb's problem line");
    expect(problems(from).filter((p) => p.device === "gw-deep")).toHaveLength(1);
    await legitKeepsFlowing();
    expect(peakRssMb() - before).toBeLessThan(300);
  }, 60_000);

  it("an uncompressed batch over the plaintext bound is refused without parsing it", async () => {
    const before = peakRssMb();
    const from = lines.length;
    const big = Buffer.concat([Buffer.from("[0"), Buffer.alloc(RECEIVER_LIMITS.plaintextBytes, ",0"), Buffer.from("]")]);
    await publish("gw-deep", sealBatch(socPub, "gw-deep", big, { compress: false }));
    await until(() => problems(from).some((p) => p.device === "gw-deep"), 30_000, "the oversized batch's problem line");
    expect(problems(from).filter((p) => p.device === "gw-deep").map((p) => p.detail)).toEqual([expect.stringContaining("larger than")]);
    await legitKeepsFlowing();
    expect(peakRssMb() - before).toBeLessThan(300);
  }, 60_000);

  it("a batch of millions of elements is one problem line, not one per element", async () => {
    const from = lines.length;
    const zeros = Buffer.concat([Buffer.from("[0"), Buffer.alloc(12 * 1024 ** 2, ",0"), Buffer.from("]")]);
    await publish("gw-deep", sealBatch(socPub, "gw-deep", zeros));
    await until(() => problems(from).some((p) => p.device === "gw-deep"), 30_000, "the batch's problem line");
    await legitKeepsFlowing();
    expect(problems(from).filter((p) => p.device === "gw-deep").map((p) => p.detail)).toEqual([expect.stringContaining(`more than ${RECEIVER_LIMITS.eventsPerBatch} events`)]);
  }, 60_000);

  it("problem lines per message are capped, with one line summarising the rest", async () => {
    const from = lines.length;
    await publish("gw-deep", sealBatch(socPub, "gw-deep", JSON.stringify(Array.from({ length: RECEIVER_LIMITS.eventsPerBatch }, () => ({ not: "an event" })))));
    await until(() => problems(from).filter((p) => p.device === "gw-deep").length > RECEIVER_LIMITS.problemLinesPerMessage, 30_000, "the summary line");
    const mine = problems(from).filter((p) => p.device === "gw-deep");
    expect(mine).toHaveLength(RECEIVER_LIMITS.problemLinesPerMessage + 1);
    // All of one kind: the summary keeps the kind and counts the rest.
    const rest = RECEIVER_LIMITS.eventsPerBatch - RECEIVER_LIMITS.problemLinesPerMessage;
    expect(mine.at(-1)).toMatchObject({ problem: "malformed", count: rest, counts: { malformed: rest } });
    // Of several kinds (a verified event 100 times, and 100 non-events): one `suppressed` line.
    const at = lines.length;
    const e0 = new DeviceStream("gw-mixed", keys.get("gw-mixed")!).firstBoot(1000);
    await publish("gw-mixed", sealBatch(socPub, "gw-mixed", JSON.stringify([...Array(100).fill(e0), ...Array(100).fill({})])));
    await until(() => problems(at).some((p) => p.device === "gw-mixed" && p.problem === "suppressed"), 30_000, "the suppressed line");
    expect(verifiedOf("gw-mixed", at)).toHaveLength(1);
    const mixed = problems(at).filter((p) => p.device === "gw-mixed");
    expect(mixed).toHaveLength(RECEIVER_LIMITS.problemLinesPerMessage + 1);
    expect(mixed.at(-1)).toMatchObject({ problem: "suppressed", count: 199 - RECEIVER_LIMITS.problemLinesPerMessage, counts: { duplicate: 99 - RECEIVER_LIMITS.problemLinesPerMessage, malformed: 100 } });
    await legitKeepsFlowing();
  }, 60_000);

  it("poison messages nested 20,000 levels deep each end in one problem line and are acknowledged", async () => {
    const from = lines.length;
    const hex = "0".repeat(64);
    const poison = `[{"v":1,"device":"gw-deep","boot":1000,"seq":1,"time":1,"mono":1,"class":"telemetry","severity":1,"ocsf":${deepJson(20_000)},"prev":"${hex}","hash":"${hex}","sig":"AA=="}]`;
    expect(poison.length).toBeLessThan(200_000);
    for (let i = 0; i < 30; i++) await publish("gw-deep", sealBatch(socPub, "gw-deep", poison));
    await until(() => problems(from).filter((p) => p.device === "gw-deep").length >= 30, 30_000, "30 problem lines");
    await legitKeepsFlowing();
    // Acknowledged: a restarted receiver (same persistent session) does not get them again.
    await rx.stop();
    await startReceiver();
    await legitKeepsFlowing();
    await legitKeepsFlowing();
    const mine = problems(from).filter((p) => p.device === "gw-deep");
    expect(mine).toHaveLength(30);
    expect(mine.every((p) => p.problem === "malformed" && /nested deeper than 32/.test(p.detail))).toBe(true);
    expect(stateOf("gw-deep").devices).toEqual([]);
  }, 90_000);

  it("a signed loss record of 200,000 ranges is verified and reported, not thrown on", async () => {
    const from = lines.length;
    const s = new DeviceStream("gw-ranges", keys.get("gw-ranges")!);
    const boot = s.firstBoot(1000);
    const ranges = Array.from({ length: 200_000 }, (_, i) => [1000, 10 + 2 * i, 10 + 2 * i]);
    const loss = s.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 200_000, ranges } });
    await publish("gw-ranges", sealBatch(socPub, "gw-ranges", JSON.stringify([boot, loss])));
    await until(() => problems(from).some((p) => p.device === "gw-ranges"), 30_000, "the loss record's line");
    expect(verifiedOf("gw-ranges", from).map((e) => e.seq)).toEqual([0, 1]);
    const rec = problems(from).find((p) => p.device === "gw-ranges")!;
    expect(rec).toMatchObject({ problem: "loss_record", boot: 1000, first: 10, last: 10 + 2 * 9999 });
    expect(rec.detail).toContain("200000 ranges; the first 10000 are applied");
    await legitKeepsFlowing();
  }, 60_000);

  it("forged events (wrong key) change no state: no invented gaps, boots or devices", async () => {
    const from = lines.length;
    const forger = new DeviceStream("gw-forged", generateDeviceKey(join(t.dir, "forger.key"), join(t.dir, "forger.pub")));
    const forged = [forger.firstBoot(9_000_000_000)];
    forger.seq = Number.MAX_SAFE_INTEGER - 1;
    forged.push(forger.next());
    forger.seq = 0;
    forged.push(forger.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 5, ranges: [[1000, 0, 5]] } }));
    Object.assign(forger, { boot: 1000, seq: 6 });
    forged.push(forger.next());
    await publish("gw-forged", sealBatch(socPub, "gw-forged", JSON.stringify(forged)));
    await until(() => problems(from).filter((p) => p.device === "gw-forged").length >= 4, 30_000, "four bad_signature lines");
    expect(problems(from).filter((p) => p.device === "gw-forged").map((p) => p.problem)).toEqual(["bad_signature", "bad_signature", "bad_signature", "bad_signature"]);
    expect(stateOf("gw-forged")).toEqual({ devices: [], boots: [], seen: [], covered: [], hashes: [] });
    // The real device's first boot then verifies with no fork, no gap, no hidden loss.
    const real = new DeviceStream("gw-forged", keys.get("gw-forged")!);
    const batch = [real.firstBoot(1000), real.next(), real.next(), real.next()];
    const at = lines.length;
    await publish("gw-forged", sealBatch(socPub, "gw-forged", JSON.stringify(batch)));
    await until(() => verifiedOf("gw-forged", at).length === 4, 30_000, "the real device's events");
    expect(problems(at).filter((p) => p.device === "gw-forged")).toEqual([]);
    expect(stateOf("gw-forged").boots).toMatchObject([{ boot: 1000, hw: 3, gap_since: null }]);
    await legitKeepsFlowing();
  }, 60_000);

  it("a batch of 10,000 forged events stops being checked after a few bad signatures", async () => {
    const from = lines.length;
    const forger = new DeviceStream("gw-badsig", generateDeviceKey(join(t.dir, "forger2.key"), join(t.dir, "forger2.pub")));
    const batch = Array.from({ length: RECEIVER_LIMITS.eventsPerBatch }, () => forger.next());
    await publish("gw-badsig", sealBatch(socPub, "gw-badsig", JSON.stringify(batch)));
    await until(() => problems(from).some((p) => p.device === "gw-badsig" && p.problem === "malformed"), 30_000, "the batch's lines");
    const mine = problems(from).filter((p) => p.device === "gw-badsig");
    expect(mine.map((p) => p.problem)).toEqual([...Array(RECEIVER_LIMITS.badEventsPerBatch).fill("bad_signature"), "malformed"]);
    expect(mine.at(-1)!.count).toBe(RECEIVER_LIMITS.eventsPerBatch - RECEIVER_LIMITS.badEventsPerBatch);
    expect(stateOf("gw-badsig").devices).toEqual([]);
    await legitKeepsFlowing();
  }, 60_000);

  it("a flood from an unknown device is a rate summary, not a line per batch", async () => {
    const from = lines.length;
    const m0 = rx.counters.messages;
    const payload = sealBatch(socPub, "gw-nobody", JSON.stringify([{ x: 1 }]), { count: 3 });
    await Promise.all(Array.from({ length: 2000 }, () => publish("gw-nobody", payload)));
    await until(() => rx.counters.messages >= m0 + 2000, 30_000, "the receiver to take 2,000 messages");
    const mine = () => problems(from).filter((p) => p.device === "gw-nobody");
    const sum = (k: "batches" | "count") => mine().reduce((n, p) => n + (p[k] as number), 0);
    await until(() => sum("batches") === 2000, 30_000, "summary lines accounting for all 2,000 batches");
    // One line at once, then one per summary period (1.5 s here) while the flood lasts.
    expect(mine().length).toBeLessThanOrEqual(10);
    expect(mine()[0]).toMatchObject({ problem: "unknown_device", batches: 1, count: 3 });
    expect(mine().every((p) => p.problem === "unknown_device")).toBe(true);
    expect(sum("count")).toBe(2000 * 3);
    await legitKeepsFlowing();
  }, 60_000);

  it("a device restarting its chain from the all-zero hash after it had events is a chain_reset", async () => {
    const from = lines.length;
    const s = new DeviceStream("gw-reset", keys.get("gw-reset")!);
    const first = [s.firstBoot(1000), s.next(), s.next()];
    // Its outbox (and the chain head with it) is gone: it starts over from the all-zero hash.
    s.prev = GENESIS_HASH;
    const again = [s.firstBoot(1001), s.next()];
    await publish("gw-reset", sealBatch(socPub, "gw-reset", JSON.stringify(first)));
    await publish("gw-reset", sealBatch(socPub, "gw-reset", JSON.stringify(again)));
    await until(() => verifiedOf("gw-reset", from).length === 5, 30_000, "the device's five events");
    expect(problems(from).filter((p) => p.device === "gw-reset").map((p) => [p.problem, p.boot, p.first])).toEqual([["chain_reset", 1001, 0]]);
  }, 60_000);

  it("many messages share one commit, and each is acknowledged after it", async () => {
    const from = lines.length;
    const c0 = rx.counters.commits;
    const s = new DeviceStream("gw-burst", keys.get("gw-burst")!);
    const msgs = Array.from({ length: 500 }, (_, i) => sealBatch(socPub, "gw-burst", JSON.stringify([i === 0 ? s.firstBoot(1000) : s.next()])));
    await Promise.all(msgs.map((m) => publish("gw-burst", m)));
    await until(() => verifiedOf("gw-burst", from).length === 500, 30_000, "500 verified events");
    expect(rx.counters.commits - c0).toBeLessThan(250);
    // All were acknowledged: a restarted receiver gets none of them again.
    await rx.stop();
    await startReceiver();
    await legitKeepsFlowing();
    expect(problems(from).filter((p) => p.device === "gw-burst")).toEqual([]);
    expect(verifiedOf("gw-burst", from)).toHaveLength(500);
  }, 60_000);
});
