/**
 * Modbus proxy load test: a request flood (allowed reads, denied writes, malformed frames,
 * pipelined) and 1,000 idle connections while a reference client polls at 10 Hz through the
 * same proxy. Reports the reference client's latency (p50/p99/max), the flood's rate and the
 * process's memory before and after. Run it with `loadModbus()`; GW_LOAD_MS sets the duration.
 * The flood comes from 127.0.0.2, the idle connections from 127.0.0.3 and the reference client
 * from 127.0.0.1: request budgets are per client, as they would be for an attacker and SCADA.
 * A second phase (`unknown_lockout`) runs the proxy with default limits and only 127.0.0.1
 * known: 8 unknown addresses keep 64 silent connections open (reopening each one the proxy
 * closes or refuses) while SCADA polls at 10 Hz and makes 20 new connections.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { startGatewarden, startWorker, RAW_SERVER_JS } from "./bench-modbus";

const IDLE_JS = `
const net = require("node:net");
const { parentPort, workerData } = require("node:worker_threads");
const socks = []; let open = 0, closed = 0;
for (let i = 0; i < workerData.count; i++) {
  const s = net.connect({ port: workerData.port, host: "127.0.0.1", localAddress: workerData.from });
  s.on("connect", () => { if (++open === workerData.count) parentPort.postMessage({ open }); });
  s.on("error", () => {}); s.on("close", () => closed++);
  socks.push(s);
}
parentPort.on("message", () => parentPort.postMessage({ open, closed }));
`;

const FLOOD_JS = `
const net = require("node:net");
const { parentPort, workerData } = require("node:worker_threads");
const frames = [
  Buffer.from("000000000006010300000005", "hex"),  // allowed read
  Buffer.from("000000000006010600050001", "hex"),  // denied write
  Buffer.from("0000000000030163ffff", "hex").subarray(0, 9), // unknown function 0x63: exception
  Buffer.from("000000000006020300000001", "hex"),  // unit not allowed
];
let answered = 0, sent = 0, reconnects = 0;
const conn = () => {
  const s = net.connect({ port: workerData.port, host: "127.0.0.1", localAddress: workerData.from, noDelay: true });
  let tid = 0, inflight = 0, got = Buffer.alloc(0);
  const pump = () => {
    const out = [];
    while (inflight < workerData.depth) {
      const f = Buffer.from(frames[(sent++) % frames.length]);
      f.writeUInt16BE((tid = (tid + 1) & 0xffff), 0);
      out.push(f); inflight++;
    }
    if (out.length) s.write(Buffer.concat(out));
  };
  s.on("connect", pump);
  s.on("data", (d) => {
    got = got.length ? Buffer.concat([got, d]) : d;
    let off = 0;
    while (got.length - off >= 6) { const n = 6 + got.readUInt16BE(off + 4); if (got.length - off < n) break; off += n; inflight--; answered++; }
    got = got.subarray(off);
    pump();
  });
  s.on("error", () => {});
  s.on("close", () => { reconnects++; if (!stop) setTimeout(conn, 10); });
};
let stop = false;
for (let i = 0; i < workerData.connections; i++) conn();
parentPort.postMessage({ started: true });
parentPort.on("message", () => { stop = true; parentPort.postMessage({ answered, reconnects }); });
`;

const REFERENCE_JS = `
const net = require("node:net");
const { parentPort, workerData } = require("node:worker_threads");
const s = net.connect({ port: workerData.port, host: "127.0.0.1", noDelay: true });
const lat = []; let errors = 0, tid = 0, t0 = 0n, waiting = false, got = 0;
s.on("error", () => errors++);
s.on("data", (d) => { got += d.length; if (got >= 29) { got -= 29; waiting = false; lat.push(Number(process.hrtime.bigint() - t0) / 1000); } });
s.on("connect", () => {
  const timer = setInterval(() => {
    if (waiting) { errors++; }
    const req = Buffer.from([0, 0, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10]);
    req.writeUInt16BE((tid = (tid + 1) & 0xffff), 0);
    t0 = process.hrtime.bigint(); waiting = true; s.write(req);
  }, 100);
  setTimeout(() => {
    clearInterval(timer);
    lat.sort((a, b) => a - b);
    const q = (p) => lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]) : null;
    parentPort.postMessage({ polls: lat.length, missed_or_late: errors, p50_us: q(0.5), p99_us: q(0.99), max_us: lat.length ? Math.round(lat[lat.length - 1]) : null });
    s.destroy();
  }, workerData.durationMs);
});
`;

/** Connections that never send anything, from several addresses, reopened when closed. */
const SILENT_JS = `
const net = require("node:net");
const { parentPort, workerData } = require("node:worker_threads");
let opened = 0, closed = 0, stop = false, open = 0;
const conn = (from) => {
  const s = net.connect({ port: workerData.port, host: "127.0.0.1", localAddress: from });
  let was = false;
  s.on("connect", () => { opened++; open++; was = true; });
  s.on("error", () => {});
  s.on("close", () => { closed++; if (was) open--; if (!stop) setTimeout(() => conn(from), 50); });
};
for (let i = 0; i < workerData.count; i++) conn(workerData.from[i % workerData.from.length]);
setTimeout(() => parentPort.postMessage({ started: true }), 500);
parentPort.on("message", () => { stop = true; parentPort.postMessage({ opened, closed, open }); });
`;

/** SCADA making new connections one after another: connect, one read, close; latency of each. */
const CONNECTS_JS = `
const net = require("node:net");
const { parentPort, workerData } = require("node:worker_threads");
const lat = []; let failed = 0;
const one = (i) => {
  if (i === workerData.count) {
    lat.sort((a, b) => a - b);
    return parentPort.postMessage({ attempts: workerData.count, answered: lat.length, failed, p50_us: lat.length ? Math.round(lat[Math.floor(lat.length / 2)]) : null, max_us: lat.length ? Math.round(lat[lat.length - 1]) : null });
  }
  const t0 = process.hrtime.bigint();
  const s = net.connect({ port: workerData.port, host: "127.0.0.1", noDelay: true });
  let done = false;
  const end = (ok) => { if (done) return; done = true; if (ok) lat.push(Number(process.hrtime.bigint() - t0) / 1000); else failed++; s.destroy(); setTimeout(() => one(i + 1), 100); };
  s.on("connect", () => s.write(Buffer.from([0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10])));
  s.on("data", () => end(true));
  s.on("error", () => end(false));
  s.on("close", () => end(false));
  setTimeout(() => end(false), 2000);
};
one(0);
`;

/**
 * Unknown clients holding connections while SCADA polls: default limits (64 connections,
 * 8 per client, 16 for unknown clients, silent unknown ones closed after 3 s), only
 * 127.0.0.1 known.
 */
async function unknownLockout(durationMs: number): Promise<object> {
  const server = await startWorker<{ port: number }>(RAW_SERVER_JS);
  const gw = await startGatewarden(server.first.port, { max_connections: 64, max_connections_per_identity: 8, max_requests_per_s: 1000 }, {}, "127.0.0.1");
  const workers = [server.worker];
  try {
    const from = Array.from({ length: 8 }, (_, i) => `127.0.0.${4 + i}`);
    const silent = await startWorker<{ started: boolean }>(SILENT_JS, { port: gw.port, count: 64, from });
    workers.push(silent.worker);
    const held = gw.service.status().listeners[0]?.unknown_connections;
    const [ref, connects] = await Promise.all([
      startWorker<{ polls: number; missed_or_late: number; p50_us: number; p99_us: number; max_us: number }>(REFERENCE_JS, { port: gw.port, durationMs }),
      startWorker<{ attempts: number; answered: number; failed: number; p50_us: number | null; max_us: number | null }>(CONNECTS_JS, { port: gw.port, count: 20 }),
    ]);
    workers.push(ref.worker, connects.worker);
    const stats = await new Promise<{ opened: number; closed: number; open: number }>((resolve) => {
      silent.worker.once("message", resolve);
      silent.worker.postMessage("stop");
    });
    return {
      silent_unknown_clients: { addresses: from.length, connections_kept_trying: 64, held_by_proxy_at_start: held, opened: stats.opened, closed_or_refused: stats.closed },
      scada_new_connections: connects.first,
      scada_reference_client_10hz: ref.first,
    };
  } finally {
    await gw.service.stop();
    for (const w of workers) await w.terminate();
  }
}

const mb = (n: number) => Math.round(n / 1048576);

export async function loadModbus(opts: { durationMs?: number; idle?: number; floodConnections?: number; depth?: number; maxRequestsPerS?: number } = {}): Promise<object> {
  const durationMs = opts.durationMs ?? Number(process.env.GW_LOAD_MS ?? 10_000);
  const flood = await floodAndIdle(durationMs, opts);
  return { ...flood, unknown_lockout: await unknownLockout(Math.min(durationMs, 5000)) };
}

async function floodAndIdle(durationMs: number, opts: { idle?: number; floodConnections?: number; depth?: number; maxRequestsPerS?: number }): Promise<object> {
  // V8's memory reducer runs full GCs in isolates that look idle, such as the 10 Hz reference
  // client's thread, adding tens of ms to the very latency being measured; the proxy on the
  // main thread is not idle and is not affected.
  setFlagsFromString("--no-memory-reducer");
  const idle = opts.idle ?? 1000;
  const server = await startWorker<{ port: number }>(RAW_SERVER_JS);
  // Default limits (16 outstanding, 1000 requests/s per client), except the idle timeout.
  const gw = await startGatewarden(server.first.port, { idle_timeout_ms: 600_000, max_outstanding: 16, max_requests_per_s: opts.maxRequestsPerS ?? 1000 });
  global.gc?.();
  const before = process.memoryUsage();
  const workers = [server.worker];
  try {
    const idleW = await startWorker<{ open: number }>(IDLE_JS, { port: gw.port, count: idle, from: "127.0.0.3" });
    workers.push(idleW.worker);
    const baseline = await startWorker<{ p99_us: number }>(REFERENCE_JS, { port: gw.port, durationMs: Math.min(3000, durationMs) });
    workers.push(baseline.worker);
    const flood = await startWorker<{ started: boolean }>(FLOOD_JS, { port: gw.port, connections: opts.floodConnections ?? 4, depth: opts.depth ?? 64, from: "127.0.0.2" });
    workers.push(flood.worker);
    const t0 = Date.now();
    // Heap of the proxy's thread once a second: flat under the flood means bounded state.
    const heap: number[] = [];
    const sampler = setInterval(() => heap.push(mb(process.memoryUsage().heapUsed)), 1000);
    // The proxy's own event-loop delay, apart from the OS scheduling of the other threads.
    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    const ref = await startWorker<{ polls: number; missed_or_late: number; p50_us: number; p99_us: number; max_us: number }>(REFERENCE_JS, { port: gw.port, durationMs });
    workers.push(ref.worker);
    const floodStats = await new Promise<{ answered: number; reconnects: number }>((resolve) => {
      flood.worker.once("message", resolve);
      flood.worker.postMessage("stop");
    });
    clearInterval(sampler);
    loop.disable();
    const secs = (Date.now() - t0) / 1000;
    const idleStats = await new Promise<{ open: number; closed: number }>((resolve) => {
      idleW.worker.once("message", resolve);
      idleW.worker.postMessage("status");
    });
    const during = process.memoryUsage();
    const status = gw.service.status();
    return {
      name: "modbus-proxy-load",
      duration_ms: durationMs,
      max_requests_per_s_per_client: opts.maxRequestsPerS ?? 1000,
      idle_connections: { requested: idle, open: idleW.first.open, closed_during_run: idleStats.closed },
      flood: { connections: opts.floodConnections ?? 4, pipeline_depth: opts.depth ?? 64, answered: floodStats.answered, answered_per_s: Math.round(floodStats.answered / secs), reconnects: floodStats.reconnects },
      reference_client_10hz: ref.first,
      proxy_event_loop_delay_ms: { p50: Math.round(loop.percentile(50) / 1e4) / 100, p99: Math.round(loop.percentile(99) / 1e4) / 100, max: Math.round(loop.max / 1e4) / 100 },
      reference_client_without_flood: baseline.first,
      proxy: { requests: status.listeners[0]?.requests, denied: status.listeners[0]?.denied, malformed: status.listeners[0]?.malformed, connections: status.listeners[0]?.connections },
      memory_mb: { rss_before: mb(before.rss), rss_after: mb(during.rss), heap_before: mb(before.heapUsed), heap_after: mb(during.heapUsed), heap_each_second: heap },
    };
  } finally {
    await gw.service.stop();
    for (const w of workers) await w.terminate();
  }
}
