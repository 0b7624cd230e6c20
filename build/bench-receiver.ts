/**
 * SOC receiver benchmarks:
 * - messages/s a receiver verifies and commits (one signed event per sealed message, the
 *   worst case for per-message costs) from a local broker, next to the disk's fsyncs/s (what a
 *   receiver with one fsync per message could at most reach) and Ed25519 verifications/s (the
 *   bound with group commit), both measured in the same run;
 * - messages/s of a flood from a device without a trusted key (counted, never opened);
 * - time and peak RSS for each hostile message of issue 13, fed through the receiver.
 */
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateRawSync } from "node:zlib";
import mqtt from "mqtt";
import pino from "pino";
import { buildSigned, GENESIS_HASH, type Envelope } from "../agent/core/envelope";
import { BatchSealer } from "../agent/events/seal";
import { signBytes, verifyBytes } from "../agent/core/sign";
import { exportTrust, generateSocKeys, loadSocPublicKey } from "../agent/keys/identity";
import { noDelay } from "../agent/mqtt-connection";
import { SocReceiver } from "../agent/soc/receive";
import { TrustStore } from "../agent/soc/trust";
import { startAedesThread, startMosquitto } from "./bench-spine";

const silent = pino({ level: "silent" });

function fsyncsPerSecond(dir: string): number {
  const fd = openSync(join(dir, "fsync-probe"), "w");
  const buf = Buffer.alloc(200, 1);
  let n = 0;
  const end = Date.now() + 1000;
  for (let off = 0; Date.now() < end; off += buf.length, n++) {
    writeSync(fd, buf, 0, buf.length, off);
    fsyncSync(fd);
  }
  closeSync(fd);
  return n;
}

/** Ed25519 verifications per second on one core: the bound for one-event messages. */
function verifiesPerSecond(key: ReturnType<typeof generateKeyPairSync>["privateKey"]): number {
  const pub = createPublicKey(key);
  const msg = Buffer.alloc(32, 7);
  const sig = signBytes(key, msg);
  let n = 0;
  const end = Date.now() + 1000;
  while (Date.now() < end) if (verifyBytes(pub, msg, sig)) n++;
  return n;
}

/** A trusted device's stream, one event per sealed message. */
function stream(device: string, key: ReturnType<typeof generateKeyPairSync>["privateKey"], socPub: Uint8Array, n: number): Buffer[] {
  const sealer = new BatchSealer(socPub);
  let prev = GENESIS_HASH;
  const out: Buffer[] = [];
  for (let seq = 0; seq < n; seq++) {
    const unmapped = seq === 0 ? { boot: { previous_boot: null, previous_last_seq: null } } : { reading: seq };
    const { env } = buildSigned({ v: 1, device, boot: 1000, seq, time: Date.now(), mono: seq, class: seq === 0 ? "system" : "telemetry", severity: 1, ocsf: { class_uid: 5001, activity_id: 2, message: "bench", unmapped }, prev }, key);
    prev = env.hash;
    out.push(sealer.seal({ device, from: [1000, seq], to: [1000, seq], count: 1 }, Buffer.from(JSON.stringify([env]))));
  }
  return out;
}

async function publishAll(url: string, topic: string, payloads: Buffer[], window = 500): Promise<void> {
  const c = await mqtt.connectAsync(url, { protocolVersion: 5, clientId: `bench-pub-${Math.random().toString(36).slice(2)}`, reconnectPeriod: 0 });
  noDelay(c);
  let next = 0;
  await Promise.all(Array.from({ length: window }, async () => {
    while (next < payloads.length) await c.publishAsync(topic, payloads[next++]!, { qos: 1 });
  }));
  await c.endAsync();
}

async function throughput(url: string, dir: string, name: string, payloads: Buffer[], device: string, wait: (rx: SocReceiver) => boolean): Promise<{ messages_per_s: number; commits: number }> {
  const out = join(dir, `${name}.jsonl`);
  const rx = new SocReceiver({ broker: url, dir, out, topic: "gatewarden/v1/+/events", clientId: `bench-${name}`, protocolVersion: 5, gapTimeoutMs: 300_000, dedupeWindow: 100_000, log: silent });
  await rx.start();
  const m0 = rx.counters.messages;
  const t0 = process.hrtime.bigint();
  const pub = publishAll(url, `gatewarden/v1/${device}/events`, payloads);
  while (!wait(rx)) await new Promise((r) => setTimeout(r, 5));
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  await pub;
  const r = { messages_per_s: Math.round((rx.counters.messages - m0) / dt), commits: (rx.counters as { commits?: number }).commits ?? rx.counters.messages - m0 };
  await rx.stop();
  return r;
}

/** Each hostile message of issue 13 through `onMessage`: ms and peak RSS growth (MiB). */
function hostile(dir: string, socPub: Uint8Array, key: ReturnType<typeof generateKeyPairSync>["privateKey"]): Record<string, { ms: number; peak_rss_growth_mb: number; lines: number }> {
  const rx = new SocReceiver({ broker: "mqtt://127.0.0.1:1", dir, out: join(dir, "hostile.jsonl"), topic: "gatewarden/v1/+/events", gapTimeoutMs: 300_000, dedupeWindow: 100_000, log: silent });
  const sealer = new BatchSealer(socPub);
  const seal = (text: Buffer | string) => sealer.sealCompressed({ device: "bench-gw", from: [1, 0], to: [1, 0], count: 1 }, deflateRawSync(typeof text === "string" ? Buffer.from(text) : text, { level: 9 }));
  const hex = "0".repeat(64);
  const signed = (seq: number, unmapped: Record<string, unknown>): Envelope => buildSigned({ v: 1, device: "bench-gw", boot: 1, seq, time: 1, mono: 1, class: "system", severity: 1, ocsf: { class_uid: 2004, activity_id: 1, message: "loss", unmapped }, prev: hex }, key).env;
  const forger = generateKeyPairSync("ed25519").privateKey;
  const cases: Record<string, () => Buffer> = {
    depth_bomb_20000: () => seal(`[{"v":1,"device":"bench-gw","boot":1,"seq":1,"time":1,"mono":1,"class":"telemetry","severity":1,"ocsf":${'{"a":'.repeat(20_000)}0${"}".repeat(20_000)},"prev":"${hex}","hash":"${hex}","sig":"AA=="}]`),
    zeros_12MiB: () => seal(Buffer.concat([Buffer.from("[0"), Buffer.alloc(12 * 1024 ** 2, ",0"), Buffer.from("]")])),
    inflates_to_64MiB: () => seal(Buffer.concat([Buffer.from("["), Buffer.alloc(3 * 22 * 1024 ** 2, "[],"), Buffer.from("[]]")])),
    not_envelopes_10000: () => seal(JSON.stringify(Array.from({ length: 10_000 }, () => ({ not: "an event" })))),
    forged_10000: () => seal(JSON.stringify(Array.from({ length: 10_000 }, (_, i) => buildSigned({ v: 1, device: "bench-gw", boot: 1, seq: i, time: 1, mono: 1, class: "telemetry", severity: 1, ocsf: { class_uid: 5001, activity_id: 2, message: "x" }, prev: hex }, forger).env))),
    loss_record_200000_ranges: () => seal(JSON.stringify([signed(0, { loss: { reason: "buffer_full", class: "telemetry", count: 200_000, ranges: Array.from({ length: 200_000 }, (_, i) => [1, 10 + 2 * i, 10 + 2 * i]) } })])),
  };
  const res: Record<string, { ms: number; peak_rss_growth_mb: number; lines: number }> = {};
  for (const [name, build] of Object.entries(cases)) {
    const payload = build();
    global.gc?.();
    const before = process.resourceUsage().maxRSS;
    const lines0 = rx.counters.events + rx.counters.problems;
    const t0 = process.hrtime.bigint();
    rx.onMessage("gatewarden/v1/bench-gw/events", payload);
    res[name] = { ms: Math.round(Number(process.hrtime.bigint() - t0) / 1e6), peak_rss_growth_mb: Math.round((process.resourceUsage().maxRSS - before) / 1024), lines: rx.counters.events + rx.counters.problems - lines0 };
  }
  void rx.stop();
  return res;
}

export async function benchReceiver(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), "gw-bench-rx-"));
  try {
    const soc = join(dir, "soc");
    mkdirSync(soc, { mode: 0o700 });
    generateSocKeys(join(soc, "soc.key"), join(soc, "soc.pub"));
    const socPub = loadSocPublicKey(join(soc, "soc.pub"));
    const key = generateKeyPairSync("ed25519").privateKey;
    TrustStore.add(soc, JSON.stringify(exportTrust("bench-gw", key)), "bench");
    const n = Number(process.env.BENCH_RX_MESSAGES ?? 5000);
    const legit = stream("bench-gw", key, socPub, n);
    const nobody = new BatchSealer(socPub);
    const unknown = Array.from({ length: n }, () => nobody.seal({ device: "bench-nobody", from: [1, 0], to: [1, 0], count: 1 }, Buffer.from("[]")));
    const mosq = await startMosquitto(dir);
    const broker = mosq ? { name: "mosquitto (MQTT 5)", url: mosq.url, stop: async () => mosq.stop() } : { name: "aedes (own thread)", ...(await startAedesThread()) };
    try {
      const fsyncs = fsyncsPerSecond(dir);
      const verifies = verifiesPerSecond(key);
      const verified = await throughput(broker.url, soc, "verified", legit, "bench-gw", (rx) => rx.counters.events >= n);
      const flood = await throughput(broker.url, soc, "unknown", unknown, "bench-nobody", (rx) => rx.counters.messages >= n);
      return {
        broker: broker.name,
        messages: n,
        disk_fsyncs_per_s: fsyncs,
        ed25519_verifies_per_s: verifies,
        verified_messages_per_s: verified.messages_per_s,
        verified_commits: verified.commits,
        unknown_device_messages_per_s: flood.messages_per_s,
        hostile: hostile(soc, socPub, key),
      };
    } finally {
      await broker.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
