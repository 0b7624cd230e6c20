/**
 * Event-spine benchmarks, each against the physical limit measured in the same run:
 * - accept: events/s recorded (signed, chained, committed) vs bare batched SQLite inserts of
 *   rows of the same size, same synchronous mode and transaction size, alternated over rounds,
 *   with the CPU time of each per event;
 * - drain: events/s from the outbox to a local broker (select, hash check, seal, QoS 1 publish,
 *   delete on PUBACK) vs bare mqtt.js QoS 1 publishing of the same payloads with the same window;
 * - bytes written to storage per event (/proc/self/io write_bytes), and RSS.
 */
import Database from "better-sqlite3";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import mqtt from "mqtt";
import nacl from "tweetnacl";
import pino from "pino";
import { Recorder } from "../agent/events/recorder";
import { ParallelSigner } from "../agent/events/signer";
import type { EventClass, EventDraft } from "../agent/core/events";
import { Outbox } from "../agent/outbox/store";
import { MqttForwarder } from "../agent/sinks/mqtt";
import { upstreamSchema } from "../agent/config/schema";
import { storageBytesWritten } from "../agent/io-stats";
import { noDelay } from "../agent/mqtt-connection";

const silent = pino({ level: "silent" });
const key = generateKeyPairSync("ed25519").privateKey;

function draft(cls: EventClass, n: number): EventDraft {
  return {
    class: cls,
    severity: cls === "finding" ? 4 : 1,
    ocsf: {
      class_uid: 2004,
      activity_id: 1,
      message: `Write to holding register 40010 denied for role scada (value ${n} outside 0..1000)`,
      finding_info: { uid: `f-${n}`, title: "Policy denial", types: ["Modbus"] },
      unmapped: { unit: 1, fc: 6, address: 9, value: n },
    },
  };
}

function writeBytes(): number {
  return storageBytesWritten() ?? Number.NaN;
}

interface AcceptRun {
  per_s: number;
  /** CPU time of this process (every thread) per event or row, µs. */
  cpu_us: number;
}

interface AcceptResult {
  events_per_s: number;
  bare_rows_per_s: number;
  /** Median over the rounds of Gatewarden / bare measured next to it, and the range. */
  ratio: number;
  ratio_range: [number, number];
  /** CPU time per event against CPU time per bare row (the same rounds): what the machine's
   * load does not move much, unlike the wall-clock ratio. */
  cpu_us_per_event: number;
  cpu_us_per_bare_row: number;
  cpu_ratio: number;
  rounds: string[];
  load_average: string;
  bytes_written_per_event: number;
  row_bytes: number;
  configuration: string;
}

/** Gatewarden's accept path: `n` events recorded, signed, chained and committed. */
async function acceptOnce(path: string, cls: EventClass, n: number, batch: number): Promise<AcceptRun & { written: number; rowBytes: number }> {
  const outbox = new Outbox(path, 2 * 1024 ** 3);
  const signer = new ParallelSigner(key);
  const rec = new Recorder({ outbox, key, signer, device: "bench-gw", version: "bench", flushMs: 1000, maxPending: batch, log: silent });
  rec.start();
  // Under sustained load the daemon's signing worker runs (it starts with the first busy batch).
  await signer.whenReady();
  const w0 = writeBytes();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) rec.record(draft(cls, i));
  rec.flush();
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  rec.close("bench");
  outbox.checkpoint();
  const written = writeBytes() - w0;
  const rowBytes = Math.round(outbox.stats().bytes / outbox.stats().depth);
  outbox.close();
  return { per_s: n / dt, cpu_us: (c.user + c.system) / n, written, rowBytes };
}

/** The limit: rows of the same size, already serialized, inserted in transactions of the same size. */
function bareOnce(path: string, cls: EventClass, n: number, batch: number, rowBytes: number): AcceptRun {
  const bare = new Database(path);
  bare.pragma("journal_mode = WAL");
  bare.pragma(`synchronous = ${cls === "finding" ? "FULL" : "NORMAL"}`);
  bare.exec("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, boot INT, seq INT, rank INT, time INT, bytes INT, parked INT DEFAULT 0, body TEXT)");
  const ins = bare.prepare("INSERT INTO t (boot, seq, rank, time, bytes, body) VALUES (?, ?, ?, ?, ?, ?)");
  const body = "x".repeat(rowBytes);
  const tx = bare.transaction((from: number) => {
    for (let i = from; i < from + batch; i++) ins.run(1, i, 3, Date.now(), rowBytes, body);
  });
  const c0 = process.cpuUsage();
  const b0 = process.hrtime.bigint();
  for (let i = 0; i < n; i += batch) tx(i);
  const bdt = Number(process.hrtime.bigint() - b0) / 1e9;
  const c = process.cpuUsage(c0);
  bare.close();
  return { per_s: n / bdt, cpu_us: (c.user + c.system) / n };
}

/**
 * Accept against bare inserts, alternated (Gatewarden, bare, Gatewarden, bare, ...) over
 * `rounds` of `n` events each, so a phase of load from elsewhere hits both alike: medians, the
 * ratio of each round's pair, and CPU time per event (every thread of the process) beside it.
 */
export async function benchAccept(dir: string, cls: EventClass, n: number, rounds: number): Promise<AcceptResult> {
  const batch = 500;
  const ours: AcceptRun[] = [];
  const bare: AcceptRun[] = [];
  let written = 0;
  let rowBytes = 0;
  const load0 = loadavg()[0]!;
  for (let r = 0; r < rounds; r++) {
    const g = await acceptOnce(join(dir, `accept-${cls}-${r}.db`), cls, n, batch);
    written += g.written;
    rowBytes = g.rowBytes;
    ours.push(g);
    bare.push(bareOnce(join(dir, `bare-${cls}-${r}.db`), cls, n, batch, rowBytes));
  }
  const ratios = ours.map((g, i) => g.per_s / bare[i]!.per_s);
  const cpuEvent = median(ours.map((g) => g.cpu_us));
  const cpuRow = median(bare.map((b) => b.cpu_us));
  return {
    events_per_s: Math.round(median(ours.map((g) => g.per_s))),
    bare_rows_per_s: Math.round(median(bare.map((b) => b.per_s))),
    ratio: round2(median(ratios)),
    ratio_range: [round2(Math.min(...ratios)), round2(Math.max(...ratios))],
    cpu_us_per_event: round1(cpuEvent),
    cpu_us_per_bare_row: round1(cpuRow),
    cpu_ratio: round2(cpuRow / cpuEvent),
    rounds: ours.map((g, i) => `${Math.round(g.per_s)} events/s (${round1(g.cpu_us)} µs CPU) vs ${Math.round(bare[i]!.per_s)} rows/s (${round1(bare[i]!.cpu_us)} µs)`),
    load_average: `${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end (${cpus().length} CPUs)`,
    bytes_written_per_event: Math.round(written / (n * rounds)),
    row_bytes: rowBytes,
    configuration: `${rounds} rounds of ${n} events, alternated with the bare inserts; recorder batches of ${batch}, signing worker running, synchronous=${cls === "finding" ? "FULL" : "NORMAL"}; bare: the same row size and transaction size, one thread`,
  };
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round1 = (x: number) => Math.round(x * 10) / 10;

/** aedes on its own thread (like a broker in its own process), so it does not share ours. */
export async function startAedesThread(): Promise<{ url: string; stop: () => Promise<void> }> {
  const { Worker } = await import("node:worker_threads");
  const { createRequire } = await import("node:module");
  const { pathToFileURL } = await import("node:url");
  const from = typeof __filename === "string" ? __filename : join(process.cwd(), "bench.js");
  const aedesPath = pathToFileURL(createRequire(from).resolve("aedes")).href;
  const src = `
    const { parentPort, workerData } = require("node:worker_threads");
    const net = require("node:net");
    (async () => {
      const { Aedes } = await import(workerData.aedes);
      const broker = await Aedes.createBroker();
      const server = net.createServer({ noDelay: true }, (s) => broker.handle(s));
      server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));
    })();`;
  const w = new Worker(src, { eval: true, workerData: { aedes: aedesPath } });
  const port = await new Promise<number>((resolve, reject) => {
    w.once("message", resolve);
    w.once("error", reject);
  });
  return { url: `mqtt://127.0.0.1:${port}`, stop: async () => void (await w.terminate()) };
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export async function startMosquitto(dir: string): Promise<{ url: string; stop: () => void } | undefined> {
  const bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].find((b) => existsSync(b));
  if (!bin) return undefined;
  const port = await freePort();
  const conf = join(dir, "mosquitto.conf");
  writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nmax_inflight_messages 0\nmax_queued_messages 0\n`);
  const child: ChildProcess = spawn(bin, ["-c", conf], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 500 });
      c.once("connect", () => (c.end(true), r(true)));
      c.once("error", () => (c.end(true), r(false)));
    });
    if (ok) return { url: `mqtt://127.0.0.1:${port}`, stop: () => child.kill("SIGTERM") };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGKILL");
  return undefined;
}

export interface DrainResult {
  broker: string;
  events_per_s: number;
  bare_per_event_msgs_per_s: number;
  ratio_vs_per_event: number;
  /** The like-for-like limit: the same number of messages of the same size, same window. */
  bare_same_batches_events_per_s: number;
  ratio_vs_same_batches: number;
  batching: string;
  messages: number;
  wire_bytes_per_event: number;
}

export async function benchDrain(dir: string, brokerName: string, url: string, version: 4 | 5, n: number): Promise<DrainResult> {
  const soc = nacl.box.keyPair();
  const outbox = new Outbox(join(dir, `drain-${brokerName}.db`), 2 * 1024 ** 3);
  const rec = new Recorder({ outbox, key, device: "bench-gw", version: "bench", flushMs: 1000, maxPending: 1000, log: silent });
  rec.start();
  for (let i = 0; i < n; i++) rec.record(draft("telemetry", i));
  rec.flush();
  // No receiver in this benchmark: rows are freed on the broker's PUBACK.
  const upstream = upstreamSchema.parse({ url, protocol_version: version, client_id: `bench-${brokerName}`, ack: "broker" });
  const fwd = new MqttForwarder({ upstream, device: "bench-gw", outbox, recorder: rec, socPublicKey: soc.publicKey, log: silent });
  const total = outbox.stats().depth;
  const rowBytes = Math.round(outbox.stats().bytes / total);
  const t0 = process.hrtime.bigint();
  fwd.start();
  while (fwd.counters.events < total) await new Promise((r) => setTimeout(r, 5));
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  const messages = fwd.counters.messages;
  const bytesPerMsg = fwd.counters.bytes / messages;
  await fwd.stop();
  outbox.close();

  // The limit: mqtt.js QoS 1 publishing each event as its own message of the same size (what a
  // forwarder without batching, sealing or a store could reach), 100 in flight, TCP_NODELAY.
  const perEvent = await barePublish(url, version, `bare1-${brokerName}`, total, rowBytes, 100);
  // Like for like: bare mqtt.js publishing the forwarder's own message count and mean message
  // size, with its window (upstream.max_inflight): what batching alone gives, without the
  // outbox reads, hash checks, deflate and sealing.
  const sameMsgs = await barePublish(url, version, `bareb-${brokerName}`, messages, Math.round(bytesPerMsg), upstream.max_inflight);
  const sameEps = sameMsgs * (total / messages);
  const eps = total / dt;
  return {
    broker: brokerName,
    events_per_s: Math.round(eps),
    bare_per_event_msgs_per_s: Math.round(perEvent),
    ratio_vs_per_event: round2(eps / perEvent),
    bare_same_batches_events_per_s: Math.round(sameEps),
    ratio_vs_same_batches: round2(eps / sameEps),
    batching: `${messages} messages of ${(total / messages).toFixed(0)} events (${Math.round(bytesPerMsg)} B on average), ${upstream.max_inflight} in flight; per-event baseline: ${total} messages of ${rowBytes} B, 100 in flight`,
    messages,
    wire_bytes_per_event: Math.round(bytesPerMsg * messages / total),
  };
}

/** mqtt.js QoS 1 publishing `count` messages of `size` bytes with `window` in flight; msgs/s. */
async function barePublish(url: string, version: 4 | 5, clientId: string, count: number, size: number, window: number): Promise<number> {
  const client = mqtt.connect(url, { protocolVersion: version, clientId, reconnectPeriod: 0 });
  await new Promise((r) => client.once("connect", r));
  noDelay(client);
  const payload = Buffer.alloc(size, 7);
  const t0 = process.hrtime.bigint();
  await new Promise<void>((resolve) => {
    let sent = 0;
    let acked = 0;
    const more = () => {
      while (sent < count && sent - acked < window) {
        sent++;
        client.publish("bench/bare", payload, { qos: 1 }, () => {
          acked++;
          if (acked === count) resolve();
          else if (sent - acked < window / 2 || sent === count) more();
        });
      }
    };
    more();
  });
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  await new Promise<void>((r) => client.end(false, {}, () => r()));
  return count / dt;
}

const round2 = (x: number) => Math.round(x * 100) / 100;

export async function benchSpine(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), "gw-bench-"));
  try {
    const n = Number(process.env.BENCH_EVENTS ?? 100_000);
    const rounds = Number(process.env.BENCH_ACCEPT_ROUNDS ?? 3);
    const skipAccept = process.env.BENCH_ONLY_DRAIN === "1";
    const onlyAccept = process.env.BENCH_ONLY_ACCEPT === "1";
    // Accept: rounds of n / rounds events each (the same events in all as one run of n).
    const perRound = Math.max(1000, Math.round(n / rounds));
    const accept_telemetry = skipAccept ? null : await benchAccept(dir, "telemetry", perRound, rounds);
    const accept_finding = skipAccept ? null : await benchAccept(dir, "finding", perRound, rounds);
    if (onlyAccept) return { accept_telemetry_NORMAL: accept_telemetry, accept_finding_FULL: accept_finding };
    const drain: DrainResult[] = [];
    const aedes = await startAedesThread();
    drain.push(await benchDrain(dir, "aedes (own thread, MQTT 3.1.1)", aedes.url, 4, n));
    await aedes.stop();
    const mosq = await startMosquitto(dir);
    if (mosq) {
      drain.push(await benchDrain(dir, "mosquitto (MQTT 5, tcp_nodelay)", mosq.url, 5, n));
      mosq.stop();
    }
    return {
      accept_telemetry_NORMAL: accept_telemetry,
      accept_finding_FULL: accept_finding,
      drain,
      rss_mb: Math.round(process.memoryUsage().rss / 1024 ** 2),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
