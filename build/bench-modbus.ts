/**
 * Modbus proxy benchmark: round trips per second and p50/p99 latency of a 10-register read
 * for a direct connection, a blind TCP pipe (the physical limit of any proxy) and Gatewarden,
 * in the same run, with 1 and 16 concurrent clients (one request in flight per client).
 *
 * Placement: the reference device and the load clients share one event loop in a child
 * process, from self-contained code (node built-ins only); the blind pipe runs in a worker
 * thread and Gatewarden on the main thread, which is otherwise idle. With two or more CPUs
 * and taskset, the path under test (pipe or proxy) gets CPU 0 and the load process the
 * others, as on a gateway, where SCADA and the PLC are other machines: otherwise the load
 * generator and the path it measures take turns on the same cores, and the tail measures the
 * scheduler. GW_BENCH_PIN=0 turns this off (the load side is then a worker thread).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { decideFailClosed } from "../protocols/policy";
import { modbusConfigSchema } from "../protocols/modbus/config";
import { encodeMbap, mbapFrameSlot, scanMbapInto } from "../protocols/modbus/codec/frame";
import { parseRequest, writeFixedRequest } from "../protocols/modbus/codec/pdu";
import { ModbusPolicy } from "../protocols/modbus/policy/engine";
import { parsePolicy } from "../protocols/modbus/policy/schema";
import { checkResponse } from "../protocols/modbus/codec/response";
import { ModbusProxyService } from "../protocols/modbus/service";
import { DecisionLines } from "../protocols/modbus/policy/decision-lines";

/** A minimal raw Modbus TCP device: answers every request with FC 3 and 10 registers. */
const DEVICE_FN_JS = `
function startDevice(onListening) {
  const resp = (tid, unit) => { const b = Buffer.alloc(29); b.writeUInt16BE(tid, 0); b.writeUInt16BE(23, 4); b[6] = unit; b[7] = 3; b[8] = 20; for (let i = 0; i < 10; i++) b.writeUInt16BE(i, 9 + 2 * i); return b; };
  const srv = net.createServer({ noDelay: true }, (s) => {
    let buf = Buffer.alloc(0);
    s.on("error", () => {});
    s.on("data", (d) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      let off = 0;
      while (buf.length - off >= 7) {
        const len = buf.readUInt16BE(off + 4);
        if (buf.length - off < 6 + len) break;
        const fc = buf[off + 7];
        if (fc === 3) s.write(resp(buf.readUInt16BE(off), buf[off + 6]));
        else { const e = Buffer.from([0, 0, 0, 0, 0, 3, buf[off + 6], fc | 0x80, 1]); e.writeUInt16BE(buf.readUInt16BE(off), 0); s.write(e); }
        off += 6 + len;
      }
      buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
    });
  });
  srv.listen(0, "127.0.0.1", () => onListening(srv.address().port));
}
`;

/** The reference device alone (the load test's device). */
export const RAW_SERVER_JS = `
const net = require("node:net");
const { parentPort } = require("node:worker_threads");
${DEVICE_FN_JS}
startDevice((port) => parentPort.postMessage({ port }));
`;

/** A blind pass-through: one upstream connection per client, bytes copied both ways. */
export const BLIND_PIPE_JS = `
const net = require("node:net");
const { parentPort, workerData } = require("node:worker_threads");
const srv = net.createServer({ noDelay: true }, (c) => {
  const u = net.connect({ port: workerData.port, host: "127.0.0.1", noDelay: true });
  c.on("error", () => u.destroy()); u.on("error", () => c.destroy());
  c.pipe(u); u.pipe(c);
});
srv.listen(0, "127.0.0.1", () => parentPort.postMessage({ port: srv.address().port }));
`;

/**
 * Load clients: \`clients\` connections, each with one FC 3 request in flight, for
 * \`durationMs\` after \`warmupMs\`; reports round trips/s and latency percentiles (us). Every
 * answer is checked (length, transaction id, function code 3 with 20 data bytes): a path
 * that answers wrongly reports \`bad\` answers instead of looking fast. Every connection is
 * closed at the end.
 */
const CLIENTS_FN_JS = `
function runClients({ port, clients, durationMs, warmupMs, spread }, report) {
  const lat = [];
  let count = 0, bad = 0, measuring = false, stop = false;
  for (let i = 0; i < clients; i++) {
    // spread: each client from its own address (127.0.0.2, .3, ...), as SCADA stations are.
    const s = net.connect({ port, host: "127.0.0.1", noDelay: true, ...(spread ? { localAddress: "127.0.0." + (2 + (i % 250)) } : {}) });
    let tid = 0, t0 = 0n, buf = null;
    const req = Buffer.from([0, 0, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10]);
    const send = () => { tid = (tid + 1) & 0xffff; req.writeUInt16BE(tid, 0); t0 = process.hrtime.bigint(); s.write(req); };
    s.on("connect", () => (stop ? s.destroy() : send()));
    s.on("error", () => {});
    s.on("data", (d) => {
      buf = buf ? Buffer.concat([buf, d]) : d;
      let off = 0;
      while (buf.length - off >= 29) {
        if (buf.readUInt16BE(off) !== tid || buf.readUInt16BE(off + 4) !== 23 || buf[off + 7] !== 3 || buf[off + 8] !== 20) bad++;
        off += 29;
        if (measuring) { count++; if (lat.length < 2000000) lat.push(Number(process.hrtime.bigint() - t0) / 1000); }
        if (stop) { s.destroy(); return; }
        send();
      }
      buf = off === buf.length ? null : buf.subarray(off);
    });
  }
  setTimeout(() => { measuring = true; const t = process.hrtime.bigint();
    setTimeout(() => { measuring = false; stop = true; const secs = Number(process.hrtime.bigint() - t) / 1e9;
      lat.sort((a, b) => a - b);
      const q = (p) => lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 10) / 10 : null;
      report({ rtt_per_s: Math.round(count / secs), p50_us: q(0.5), p99_us: q(0.99), samples: lat.length, bad });
    }, durationMs);
  }, warmupMs);
}
`;

/**
 * The load side in one event loop: the reference device, and a round of load clients for each
 * message received (\`{ port, clients, durationMs, warmupMs }\`), answered with its figures.
 * One process, not two: two processes sharing a CPU take turns at the scheduler's
 * granularity, and the tail then measures the scheduler (on 2 CPUs the direct path's p99 was
 * about 1.1 ms with the device and the clients in separate processes, 0.5 ms in one).
 */
export const LOAD_JS = `
const net = require("node:net");
const { parentPort } = require("node:worker_threads");
${DEVICE_FN_JS}
${CLIENTS_FN_JS}
startDevice((port) => parentPort.postMessage({ port }));
parentPort.on("message", (wd) => runClients(wd, (r) => parentPort.postMessage(r)));
`;

export function startWorker<T>(code: string, workerData: unknown = {}): Promise<{ worker: Worker; first: T }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(code, { eval: true, workerData });
    worker.once("message", (first: T) => resolve({ worker, first }));
    worker.once("error", reject);
  });
}

/** CPUs for the load side and what the report says of the placement; null: unpinned. */
export function pinForBench(): { load: string; placement: string; unpin: () => void } | null {
  const n = cpus().length;
  if (process.env.GW_BENCH_PIN === "0" || n < 2) return null;
  // -a: every thread of this process, and threads made later (the pipe worker) inherit it.
  const r = spawnSync("taskset", ["-a", "-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
  if (r.status !== 0) return null;
  const load = n === 2 ? "1" : `1-${n - 1}`;
  const unpin = () => void spawnSync("taskset", ["-a", "-p", "-c", `0-${n - 1}`, String(process.pid)], { stdio: "ignore" });
  return { load, unpin, placement: `pipe and proxy on CPU 0, device and clients (one process) on CPU ${load} (taskset)` };
}

/**
 * Runs worker code (which talks through \`parentPort\` and reads \`workerData\`) in a child
 * process on the given CPUs: the same code as a worker thread, apart from the load it measures.
 */
export function startProcess<T>(code: string, workerData: unknown, cpuList: string): Promise<{ proc: ChildProcess; first: T }> {
  const shim = "const parentPort = { postMessage: (m) => process.send(m), on: (e, f) => process.on(e, f) }; const workerData = JSON.parse(process.env.GW_WORKER_DATA);";
  const body = code.replace(/const \{[^}]*\} = require\("node:worker_threads"\);/, shim);
  const proc = spawn("taskset", ["-c", cpuList, process.execPath, "-e", body], { stdio: ["ignore", "inherit", "inherit", "ipc"], env: { ...process.env, GW_WORKER_DATA: JSON.stringify(workerData) } });
  return new Promise((resolve, reject) => {
    proc.once("message", (first) => resolve({ proc, first: first as T }));
    proc.once("error", reject);
    proc.once("exit", (code) => reject(new Error(`bench child exited with ${code}`)));
  });
}

/** A load-side peer that answers requests, one at a time, with one message each. */
interface Peer<T> {
  first: T;
  ask<R>(msg: unknown): Promise<R>;
  stop(): Promise<unknown>;
}

/** A load-side peer: a child process on the load CPUs when pinned, else a worker thread. */
async function startPeer<T>(code: string, workerData: unknown, pin: { load: string } | null): Promise<Peer<T>> {
  if (pin) {
    const { proc, first } = await startProcess<T>(code, workerData, pin.load);
    return {
      first,
      ask: <R>(msg: unknown) => new Promise<R>((resolve) => (proc.once("message", (m) => resolve(m as R)), proc.send(msg as object))),
      stop: () => new Promise((r) => (proc.exitCode !== null ? r(null) : (proc.once("exit", r), proc.kill()))),
    };
  }
  const { worker, first } = await startWorker<T>(code, workerData);
  return {
    first,
    ask: <R>(msg: unknown) => new Promise<R>((resolve) => (worker.once("message", (m: R) => resolve(m)), worker.postMessage(msg))),
    stop: () => worker.terminate(),
  };
}

/**
 * A Gatewarden proxy on the main thread, read-only policy for 127.0.0.1, routed to `devicePort`.
 * The benchmark measures the proxy's own cost, so the per-connection request rate limit is
 * off unless `limits` sets it (the load test keeps the default).
 */
export async function startGatewarden(devicePort: number, limits: Record<string, number> = {}, upstream: Record<string, number> = {}, known = "127.0.0.0/8"): Promise<{ service: ModbusProxyService; port: number }> {
  return startProxyWith(devicePort, { connections: 2, max_in_flight: 32, max_queue: 4096, ...upstream }, { max_connections: 2048, max_connections_per_identity: 2048, max_requests_per_s: 0, ...limits }, known);
}

/** The same proxy with exactly the given upstream and limit settings (schema defaults for the rest). */
export async function startProxyWith(devicePort: number, upstream: Record<string, number>, limits: Record<string, number>, known = "127.0.0.0/8"): Promise<{ service: ModbusProxyService; port: number }> {
  const config = modbusConfigSchema.parse({
    listeners: [{ name: "bench", type: "tcp", listen: "127.0.0.1:0" }],
    upstreams: [{ name: "dev", type: "tcp", target: `127.0.0.1:${devicePort}`, ...upstream }],
    routes: [{ unit: 1, upstream: "dev" }],
    policy: {
      identities: [{ match: { address: known }, role: "scada" }],
      roles: { scada: { units: [1], functions: ["read-only"], read: { holding: ["0-99"] } } },
    },
    limits,
  });
  const service = new ModbusProxyService({ config, events: { record() {} } });
  const bound = await service.start();
  return { service, port: bound[0]!.port };
}

/**
 * CPU cost of the proxy's own work per request, without sockets, through the same calls as
 * the proxy's path: frame scan, strict parse, decision (a role with several ranges and value
 * bounds), re-serialisation into a batch buffer, response check and reply framing. Median of
 * 5 runs of 200,000 requests.
 */
export function codecAndPolicyNs(): number {
  const pol = new ModbusPolicy(
    parsePolicy({
      identities: [{ match: { address: "10.0.0.0/8" }, role: "r" }],
      roles: { r: { units: [1], functions: ["read-write"], read: { holding: ["0-99", "200-299", "1000-1999"] }, write: { holding: ["10-19"] }, values: [{ table: "holding", address: "10-19", min: 0, max: 100 }] } },
    }),
  );
  const identity = { transport: "tcp" as const, address: "10.1.2.3" };
  const frame = encodeMbap(1, 1, Buffer.from("0300000010", "hex"));
  const resp = Buffer.concat([Buffer.from([3, 32]), Buffer.alloc(32)]);
  const slot = mbapFrameSlot();
  const batch = Buffer.alloc(64);
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const n = 200_000;
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      if (scanMbapInto(frame, 0, slot) !== "frame") throw new Error("bench frame");
      const p = parseRequest(frame.subarray(7, slot.size));
      if (!p.ok || !decideFailClosed(pol, { identity, unit: slot.unit, req: p.req, now: 0 }).allow) throw new Error("bench request");
      if (!writeFixedRequest(p.req, batch, 7)) throw new Error("bench encoding");
      if (!checkResponse(p.req, resp).ok) throw new Error("bench response");
      encodeMbap(slot.tid, 1, resp);
    }
    runs.push(Number(process.hrtime.bigint() - t) / n);
  }
  return Math.round(runs.sort((a, b) => a - b)[2]!);
}

/**
 * What commissioning mode's output costs per request without sockets, through DecisionLines
 * (its output) writing to /dev/null: `counted_repeat`, an allowed read repeating within the
 * batch (a time stamp and the counter on the first one's line: what SCADA's polling costs);
 * `printed_line`, a request with a line of its own (every denial, write and exception: the
 * record built, JSON, and its share of the batched write). Median of 5 runs.
 */
export function decisionOutputNs(): { counted_repeat: number; printed_line: number } {
  const fd = openSync("/dev/null", "w");
  try {
    const lines = new DecisionLines((text) => void writeSync(fd, text));
    const id = { identity: "ip:127.0.0.2", transport: "tcp" as const, address: "127.0.0.2" };
    const record = (i: number) => ({ ts: Date.now(), listener: "cli", ...id, unit: 1, fc: 6, function: "write_single_register", addresses: `write holding ${i & 0xff}`, values: [i & 0xffff], allow: false, rule: "roles.scada.functions", reason: "function not allowed for this role", request: "0600100005", exception: 1 });
    const key = "cli\nip:127.0.0.2\n\n1\nroles.scada.read.holding\n030000000a";
    const time = (n: number, f: (i: number) => void): number => {
      const runs: number[] = [];
      for (let r = 0; r < 5; r++) {
        const t = process.hrtime.bigint();
        for (let i = 0; i < n; i++) f(i);
        lines.flush();
        runs.push(Number(process.hrtime.bigint() - t) / n);
      }
      return Math.round(runs.sort((a, b) => a - b)[2]!);
    };
    return {
      counted_repeat: time(200_000, () => {
        if (!lines.repeat(key, Date.now())) lines.add({ ...record(0), fc: 3, function: "read_holding_registers", allow: true, rule: "roles.scada.read.holding" }, key);
      }),
      printed_line: time(50_000, (i) => lines.add(record(i))),
    };
  } finally {
    closeSync(fd);
  }
}

interface Figures {
  rtt_per_s: number;
  p50_us: number | null;
  p99_us: number | null;
  samples: number;
  bad: number;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round1 = (x: number): number => Math.round(x * 10) / 10;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
const BASELINES = ["direct", "blind_pipe", "blind_pipe_process"];

/**
 * The proxy configurations measured, each stated in the output. `defaults`: what a config
 * without these keys gets (one upstream connection, one request in flight, 64 connections,
 * 8 per identity, 1000 requests/s per client identity). `matched`: the concurrency of the
 * blind pipe, which opens one device connection per client with one request each (as many
 * upstream connections as clients, up to the 16 the schema allows, one in flight each), and
 * no request-rate limit, which the pipe does not have either.
 */
function proxyConfigs(clients: number): Record<string, { upstream: Record<string, number>; limits: Record<string, number>; says: string }> {
  const n = Math.min(clients, 16);
  return {
    gatewarden_defaults: { upstream: {}, limits: {}, says: "daemon, schema defaults: 1 upstream connection x 1 in flight, max_connections 64, 8 per identity, max_requests_per_s 1000" },
    gatewarden_matched: { upstream: { connections: n, max_in_flight: 1, max_queue: 4096 }, limits: { max_requests_per_s: 0 }, says: `daemon, matched to the pipe: ${n} upstream connection(s) x 1 in flight, max_requests_per_s 0 (off), other limits default` },
  };
}

/** A proxy path as a process of its own on the proxy's CPU, and how to read its CPU time and stop it. */
interface ProxyProcess {
  port: number;
  says: string;
  cpuUs: () => number;
  stop: () => Promise<void>;
}

/** The built bundle `name` (dist/), from dist/bench.cjs (bundled) or build/bench-modbus.ts (tests) alike. */
const distFile = (name: string): string => join(dirname(fileURLToPath(import.meta.url)), "..", "dist", name);

/**
 * Starts `node ARGS` on the proxy's CPU (when pinned) and waits for its "Listening on HOST:PORT"
 * on stderr; `onLine` gets each whole line it prints on stdout.
 */
async function startListeningProcess(args: string[], pinned: boolean, onLine?: (line: string) => void): Promise<{ proc: ChildProcess; port: number; cpuUs: () => number; stop: () => Promise<void> }> {
  // GW_BENCH_PROF=DIR: a CPU profile of each such process (node --cpu-prof) into DIR.
  const prof = process.env.GW_BENCH_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.GW_BENCH_PROF}`] : [];
  const argv = [...prof, ...args];
  const proc = pinned ? spawn("taskset", ["-c", "0", process.execPath, ...argv], { stdio: ["ignore", "pipe", "pipe"] }) : spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "pipe"] });
  let rest = "";
  proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
    const lines = (rest + d).split("\n");
    rest = lines.pop()!;
    if (onLine) for (const l of lines) onLine(l);
  });
  const port = await new Promise<number>((resolve, reject) => {
    let err = "";
    proc.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      const m = /Listening on [^:]+:(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    proc.once("exit", (code) => reject(new Error(`${args.slice(0, 3).join(" ")} exited with ${code}: ${err}`)));
  });
  return {
    proc,
    port,
    cpuUs: () => processCpuUs(proc.pid!),
    stop: () => new Promise((r) => (proc.exitCode !== null ? r() : (proc.stdout!.once("end", () => r()), proc.kill("SIGTERM")))),
  };
}

/**
 * Commissioning mode (`gatewarden modbus proxy`, printing its decisions as JSON lines to a pipe
 * the benchmark reads) as its own process on the proxy's CPU, with the command's defaults or
 * with the concurrency matched to the pipe. `printed()`: the lines read so far and the requests
 * they stand for (a line with `count` stands for that many).
 */
async function startCommissioning(devicePort: number, clients: number, pinned: boolean, matched: boolean): Promise<ProxyProcess & { printed: () => { lines: number; requests: number } }> {
  const n = Math.min(clients, 16);
  const flags = matched ? ["--upstream-connections", String(n), "--max-in-flight", "1", "--max-requests-per-s", "0"] : [];
  const printed = { lines: 0, requests: 0 };
  const p = await startListeningProcess([distFile("gatewarden.cjs"), "modbus", "proxy", "--listen", "127.0.0.1:0", "--upstream", `tcp://127.0.0.1:${devicePort}`, "--preset", "read-only", ...flags], pinned, (l) => {
    printed.lines++;
    printed.requests += (JSON.parse(l) as { count?: number }).count ?? 1;
  });
  return {
    ...p,
    says: `gatewarden modbus proxy --preset read-only${flags.length ? " " + flags.join(" ") : ""} (its own process, decisions to a pipe the bench reads; ${matched ? `${n} upstream connection(s) x 1 in flight, no rate limit, other limits default` : "command defaults: 1 upstream connection x 1 in flight, max_requests_per_s 1000, max_connections 64, 8 per identity"})`,
    printed: () => ({ ...printed }),
  };
}

/**
 * The daemon's proxy matched to the pipe (the same service and settings as
 * `gatewarden_matched`, no decision output) as a process of its own on the proxy's CPU: what
 * commissioning mode matched is, without printing its decisions. Commissioning mode against it,
 * round by round, is what printing costs, with the placement alike.
 */
async function startDaemonProxyProcess(devicePort: number, clients: number, pinned: boolean): Promise<ProxyProcess> {
  const c = proxyConfigs(clients).gatewarden_matched!;
  const p = await startListeningProcess([distFile("bench.cjs"), "modbus-proxy-process", String(devicePort), JSON.stringify(c.upstream), JSON.stringify(c.limits)], pinned);
  return { ...p, says: `${c.says}; as a process of its own, like commissioning mode, without its output` };
}

/** `dist/bench.cjs modbus-proxy-process DEVICE_PORT UPSTREAM_JSON LIMITS_JSON`: the child of startDaemonProxyProcess, until SIGTERM. */
export async function modbusProxyProcess(argv: string[]): Promise<void> {
  const gw = await startProxyWith(Number(argv[0]), JSON.parse(argv[1]!) as Record<string, number>, JSON.parse(argv[2]!) as Record<string, number>);
  process.stderr.write(`Listening on 127.0.0.1:${gw.port}\n`);
  process.once("SIGTERM", () => void gw.service.stop().then(() => process.exit(0)));
}

/**
 * CPU time (user + system) of another process so far, µs: the sum over its threads of the
 * nanoseconds they ran (/proc/PID/task/TID/schedstat), else clock ticks (/proc/PID/stat), else NaN.
 */
function processCpuUs(pid: number): number {
  let ns = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        /* the thread ended between the listing and the read */
      }
    }
  } catch {
    /* no /proc/PID/task: ticks below */
  }
  if (ns > 0) return ns / 1000;
  try {
    // Fields after the command name: state is 3rd, utime 14th, stime 15th (in clock ticks).
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1e6) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}
const CLOCK_TICKS = 100;

/** This process's CPU time, µs, read the same way as another's (processCpuUs), so that the
 * paths in this process and those in processes of their own are measured alike. */
const ownCpuUs = (): number => {
  const t = processCpuUs(process.pid);
  if (Number.isFinite(t)) return t;
  const c = process.cpuUsage();
  return c.user + c.system;
};

/**
 * The paths measured next to each other, one block after the other in each round: each proxy
 * beside the pipe of its placement. In the bench process: the pipe (a worker thread) and the
 * daemon's proxies (main thread). As processes of their own on the proxy's CPU: the pipe, the
 * daemon's matched proxy and commissioning mode.
 */
const BLOCKS = [
  ["blind_pipe", "gatewarden_defaults", "gatewarden_matched"],
  ["blind_pipe_process", "gatewarden_matched_process", "commissioning_matched", "commissioning_defaults"],
] as const;

/** The order of round `r`: the direct path, then the blocks (alternating which goes first), each rotated by `r`. */
export function roundOrder(r: number): string[] {
  const blocks = r % 2 ? [...BLOCKS].reverse() : BLOCKS;
  return ["direct", ...blocks.flatMap((b) => b.map((_, i) => b[(i + r) % b.length]!))];
}

const range = (xs: readonly number[], round: (x: number) => number): number[] => [round(Math.min(...xs)), round(Math.max(...xs))];

export async function benchModbus(opts: { durationMs?: number; warmupMs?: number; rounds?: number; clients?: number[]; codec?: boolean } = {}): Promise<object> {
  const durationMs = opts.durationMs ?? Number(process.env.GW_BENCH_MS ?? 1000);
  const warmupMs = opts.warmupMs ?? 200;
  const rounds = opts.rounds ?? Number(process.env.GW_BENCH_ROUNDS ?? 7);
  const pin = pinForBench();
  const server = await startPeer<{ port: number }>(LOAD_JS, {}, pin);
  const pipe = await startWorker<{ port: number }>(BLIND_PIPE_JS, { port: server.first.port });
  // The same pipe as a process of its own on the proxy's CPU: the like-for-like limit of
  // commissioning mode, which is a process of its own too.
  const pipeProc = await startProcess<{ port: number }>(BLIND_PIPE_JS, { port: server.first.port }, pin ? "0" : `0-${cpus().length - 1}`);
  type Row = Omit<Figures, "bad"> & { rtt_per_s_range: number[]; cpu_us_per_round_trip: number | null; cpu_us_per_round_trip_range: number[] | null; rounds: string[] };
  const results: Record<string, Record<string, Row>> = {};
  const paired: Record<string, Record<string, object>> = {};
  const configuration: Record<string, Record<string, string>> = {};
  const commissioningVsDaemon: Record<string, Record<string, { throughput: number; range: number[] }>> = {};
  const printing: Record<string, object> = {};
  const loadAverage: Record<string, string> = {};
  const answered: Record<string, Record<string, number>> = {};
  const printedBy: Record<string, Record<string, { lines: number; requests: number; answered_while_measured: number }>> = {};
  let bad = 0;
  try {
    const fromEnv = process.env.GW_BENCH_CLIENTS?.split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);
    for (const clients of opts.clients ?? (fromEnv?.length ? fromEnv : [1, 16])) {
      const key = `clients_${clients}`;
      const load0 = loadavg()[0]!;
      const stops: (() => Promise<unknown>)[] = [];
      const printers: Record<string, () => { lines: number; requests: number }> = {};
      // The CPU time of the path under test: this process (the pipe's worker thread, or the
      // daemon's proxy on the main thread; the other is idle meanwhile), or the path's own
      // process. The direct path's is the load process's, not measured.
      const cpuOf: Record<string, () => number> = { blind_pipe: ownCpuUs, blind_pipe_process: () => processCpuUs(pipeProc.proc.pid!) };
      const says: Record<string, string> = {
        direct: "the device itself",
        blind_pipe: "one device connection per client, bytes copied both ways (worker thread of the bench process, beside the daemon's proxies)",
        blind_pipe_process: "the same pipe as a process of its own (as commissioning mode is)",
      };
      const ports: Record<string, number> = { direct: server.first.port, blind_pipe: pipe.first.port, blind_pipe_process: pipeProc.first.port };
      try {
        for (const [name, c] of Object.entries(proxyConfigs(clients))) {
          const gw = await startProxyWith(server.first.port, c.upstream, c.limits);
          stops.push(() => gw.service.stop());
          ports[name] = gw.port;
          says[name] = c.says;
          cpuOf[name] = ownCpuUs;
        }
        const own: [string, ProxyProcess & { printed?: () => { lines: number; requests: number } }][] = [
          ["gatewarden_matched_process", await startDaemonProxyProcess(server.first.port, clients, pin !== null)],
          ["commissioning_defaults", await startCommissioning(server.first.port, clients, pin !== null, false)],
          ["commissioning_matched", await startCommissioning(server.first.port, clients, pin !== null, true)],
        ];
        for (const [name, p] of own) {
          stops.push(p.stop);
          ports[name] = p.port;
          says[name] = p.says;
          cpuOf[name] = p.cpuUs;
          if (p.printed) printers[name] = p.printed;
        }
        // Every path gets the same clients, each from its own address.
        const ask = (port: number, ms: number) => server.ask<Figures>({ port, clients, durationMs: ms, warmupMs, spread: true });
        // One discarded pass over every path first (connection set-up, JIT, caches), alike for all.
        for (const port of Object.values(ports)) await ask(port, Math.min(durationMs, 300));
        const per: Record<string, Figures[]> = Object.fromEntries(Object.keys(ports).map((n) => [n, []]));
        const cpuPer: Record<string, number[]> = Object.fromEntries(Object.keys(ports).map((n) => [n, []]));
        // Several short rounds; in each, every proxy is measured beside the pipe of its
        // placement, in an order that rotates from round to round (roundOrder), and each ratio
        // is taken within a round: a burst of load from elsewhere, or a drift of the machine,
        // then hits both sides of a ratio alike. Medians over the rounds, with their range.
        for (let r = 0; r < rounds; r++)
          for (const name of roundOrder(r)) {
            const cpu = cpuOf[name];
            const c0 = cpu?.();
            const f = await ask(ports[name]!, durationMs);
            // Per round trip over warm-up and measurement alike (the rate measured stands for both).
            if (cpu) cpuPer[name]!.push((cpu() - c0!) / ((f.rtt_per_s * (durationMs + warmupMs)) / 1000));
            per[name]!.push(f);
          }
        for (const v of Object.values(per)) for (const x of v) bad += x.bad;
        configuration[key] = says;
        results[key] = Object.fromEntries(
          Object.entries(per).map(([k, v]) => {
            const c = cpuPer[k]!.filter(Number.isFinite);
            return [
              k,
              {
                rtt_per_s: median(v.map((x) => x.rtt_per_s)),
                rtt_per_s_range: range(v.map((x) => x.rtt_per_s), Math.round),
                cpu_us_per_round_trip: c.length ? round1(median(c)) : null,
                cpu_us_per_round_trip_range: c.length ? range(c, round1) : null,
                p50_us: median(v.map((x) => x.p50_us ?? Infinity)),
                p99_us: median(v.map((x) => x.p99_us ?? Infinity)),
                samples: v.reduce((n, x) => n + x.samples, 0),
                rounds: v.map((x, i) => `${x.rtt_per_s}/s p50 ${x.p50_us} p99 ${x.p99_us}${c.length ? ` cpu ${round1(cpuPer[k]![i]!)} us` : ""}`),
              },
            ];
          }),
        );
        // Ratios within a round, median and range over the rounds.
        const ratio = (a: string, b: string) => {
          const xs = per[a]!.map((x, i) => x.rtt_per_s / per[b]![i]!.rtt_per_s);
          return { median: round3(median(xs)), range: range(xs, round3) };
        };
        const cpuRatio = (a: string, b: string) => {
          const xs = cpuPer[a]!.map((x, i) => x / cpuPer[b]![i]!).filter(Number.isFinite);
          return xs.length ? { median: round3(median(xs)), range: range(xs, round3) } : null;
        };
        const added = (a: string, b: string, q: "p50_us" | "p99_us") => round1(median(per[a]!.map((x, i) => (x[q] ?? Infinity) - (per[b]![i]![q] ?? Infinity))));
        paired[key] = Object.fromEntries(
          Object.keys(ports)
            .filter((n) => !BASELINES.includes(n))
            .map((n) => {
              const t = ratio(n, "blind_pipe");
              const tp = ratio(n, "blind_pipe_process");
              const beside = BLOCKS[0].includes(n as never) ? "blind_pipe" : "blind_pipe_process";
              return [
                n,
                {
                  throughput_vs_pipe: t.median,
                  throughput_vs_pipe_range: t.range,
                  added_p50_us_vs_pipe: added(n, "blind_pipe", "p50_us"),
                  added_p99_us_vs_pipe: added(n, "blind_pipe", "p99_us"),
                  throughput_vs_pipe_process: tp.median,
                  throughput_vs_pipe_process_range: tp.range,
                  // CPU per round trip against the pipe of the same placement, measured beside it.
                  cpu_vs: beside,
                  cpu_per_round_trip_ratio: cpuRatio(n, beside),
                },
              ];
            }),
        );
        // Commissioning mode against the daemon's proxy with the same settings, round by round.
        commissioningVsDaemon[key] = Object.fromEntries(
          (["defaults", "matched"] as const).map((c) => {
            const x = ratio(`commissioning_${c}`, `gatewarden_${c}`);
            return [c, { throughput: x.median, range: x.range }];
          }),
        );
        // What printing its decisions costs, like with like: commissioning mode matched against
        // the daemon's matched proxy as a process of its own, measured beside it in each round.
        const cpuAdded = cpuPer.commissioning_matched!.map((x, i) => x - cpuPer.gatewarden_matched_process![i]!).filter(Number.isFinite);
        const t = ratio("commissioning_matched", "gatewarden_matched_process");
        printing[key] = {
          throughput_vs_daemon_process: t.median,
          throughput_vs_daemon_process_range: t.range,
          cpu_us_added_per_round_trip: cpuAdded.length ? round1(median(cpuAdded)) : null,
          cpu_us_added_per_round_trip_range: cpuAdded.length ? range(cpuAdded, round1) : null,
        };
        answered[key] = Object.fromEntries(Object.keys(printers).map((n) => [n, per[n]!.reduce((t, x) => t + x.samples, 0)]));
      } finally {
        for (const stop of stops) await stop();
      }
      loadAverage[key] = `${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end (1-minute, ${cpus().length} CPUs)`;
      // After the stops: commissioning mode writes what it still holds when it stops.
      printedBy[key] = Object.fromEntries(Object.entries(printers).map(([n, f]) => [n, { ...f(), answered_while_measured: answered[key]?.[n] ?? 0 }]));
    }
  } finally {
    await pipe.worker.terminate();
    await new Promise((r) => (pipeProc.proc.exitCode !== null ? r(null) : (pipeProc.proc.once("exit", r), pipeProc.proc.kill())));
    await server.stop();
    pin?.unpin();
  }
  if (bad) throw new Error(`modbus bench: ${bad} answers were not the expected FC 3 response`);
  const summary = Object.fromEntries(
    Object.entries(results).map(([k, r]) => [
      k,
      Object.fromEntries(
        Object.keys(r)
          .filter((n) => !BASELINES.includes(n))
          .map((n) => [
            n,
            {
              throughput_vs_pipe: Math.round((r[n]!.rtt_per_s / r.blind_pipe!.rtt_per_s) * 1000) / 1000,
              added_p50_us_vs_pipe: round1(r[n]!.p50_us! - r.blind_pipe!.p50_us!),
              added_p99_us_vs_pipe: round1(r[n]!.p99_us! - r.blind_pipe!.p99_us!),
            },
          ]),
      ),
    ]),
  );
  return {
    name: "modbus-proxy",
    request: "FC 3, 10 holding registers, one request in flight per client, each client from its own 127.0.0.x address",
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? "unknown", node: process.version },
    placement: pin?.placement ?? "unpinned: every thread on every CPU",
    load_average: loadAverage,
    duration_ms: durationMs,
    rounds,
    order: "each round: direct, then each block (alternating which first) rotated by the round: " + BLOCKS.map((b) => b.join(", ")).join(" | "),
    configuration,
    // Per path: medians over the rounds, the rounds' range of round trips/s, and the CPU time
    // of the path under test per round trip (µs), which the machine's load moves less than
    // throughput at 16 clients (at 1 client every round trip wakes the path twice, and what a
    // wake-up costs moves with the load too).
    results,
    summary,
    summary_paired_by_round: paired,
    commissioning_vs_daemon_same_settings: commissioningVsDaemon,
    printing_cost: printing,
    // Lines commissioning mode printed and the requests they stand for (warm-up included),
    // against the answers counted while measuring: every request is printed or counted.
    commissioning_printed: printedBy,
    ...(opts.codec === false ? {} : { codec_and_policy_ns_per_request: codecAndPolicyNs(), commissioning_output_ns_per_request: decisionOutputNs() }),
    targets: { throughput_vs_pipe_min: 0.9, added_p99_us_max: 100, applies_to: "gatewarden_matched and commissioning_matched; with the defaults, commissioning mode against the daemon with the same defaults (commissioning_vs_daemon_same_settings)" },
  };
}
