/**
 * OPC UA benchmark: read round trips per second with p50/p99 latency, and subscription
 * notifications per second with p50/p99 latency (from the device setting a value to the
 * client receiving it), for a client talking to the legacy device directly (security None,
 * anonymous: what SCADA does today) and through Gatewarden's front (SignAndEncrypt with
 * Basic256Sha256 and a user: what it does behind the gateway), in the same run, as ratios.
 *
 * Placement as in the Modbus benchmark: the front (the path under test) runs in this process,
 * on CPU 0 when pinned; the legacy device and the clients are two child processes on the
 * other CPUs (bench-opcua-peer.ts). Rounds alternate direct and front; rows give medians.
 * GW_OPCUA_BENCH_MS sets the measuring time of each round (default 3000).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import pino from "pino";
import { opcuaConfigSchema } from "../protocols/opcua/config";
import { hashPassword, writeUsers } from "../protocols/opcua/front-users";
import { OpcuaService } from "../protocols/opcua/service";
import type { LoadFigures, PeerRequest, PeerTarget } from "./bench-opcua-peer";
import { pinForBench } from "./bench-modbus";

export const NODES = 200;
const ROUNDS = 3;
export const USER = { name: "bench", password: "bench-scada-42" };
/**
 * Every bench client connects from 127.0.0.1, and each round opens new sessions: the per-address
 * limits a front has by default (8 connections, 30 new ones per 10 s) would refuse them.
 */
export const FRONT_LIMITS = { max_channels_per_address: 32, pre_auth_rate: { max: 10_000, interval_ms: 10_000 } };
/** The device sets every node to the wall time this often. */
export const UPDATE_MS = 100;

export interface Peer<T> {
  first: T;
  ask<R>(msg: PeerRequest): Promise<R>;
  stop(): void;
}

export function startPeer<T>(role: "opcua-device" | "opcua-clients", env_: Record<string, string>, cpuList: string | null): Promise<Peer<T>> {
  const args = [process.argv[1]!, role];
  const env = { ...process.env, ...env_ };
  const proc: ChildProcess = cpuList
    ? spawn("taskset", ["-c", cpuList, process.execPath, ...args], { stdio: ["ignore", "ignore", "inherit", "ipc"], env })
    : spawn(process.execPath, args, { stdio: ["ignore", "ignore", "inherit", "ipc"], env });
  return new Promise((resolve, reject) => {
    proc.once("error", reject);
    proc.once("exit", (code) => reject(new Error(`OPC UA bench peer exited with ${code}`)));
    proc.once("message", (first) =>
      resolve({
        first: first as T,
        ask: <R>(msg: PeerRequest) =>
          new Promise<R>((res, rej) => {
            proc.once("message", (m) => ((m as { error?: string }).error ? rej(new Error(`OPC UA bench peer: ${(m as { error: string }).error}`)) : res(m as R)));
            proc.send(msg);
          }),
        stop: () => void proc.kill(),
      }),
    );
  });
}

export async function benchOpcua(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), "gw-bench-opcua-"));
  const pin = pinForBench();
  let device: Peer<{ port: number; namespaceUri: string }> | undefined;
  let peer: Peer<unknown> | undefined;
  let svc: OpcuaService | undefined;
  try {
    const env = { GW_BENCH_DIR: dir, GW_BENCH_NODES: String(NODES), GW_BENCH_UPDATE_MS: String(UPDATE_MS) };
    device = await startPeer("opcua-device", env, pin?.load ?? null);
    peer = await startPeer("opcua-clients", { ...env, GW_BENCH_NSURI: device.first.namespaceUri }, pin?.load ?? null);
    const legacy = `opc.tcp://127.0.0.1:${device.first.port}`;
    const usersFile = join(dir, "users.json");
    writeUsers(usersFile, { version: 1, users: { [USER.name]: { role: "reader", hash: hashPassword(USER.password), changed: new Date().toISOString() } } });
    const config = opcuaConfigSchema.parse({
      pki_dir: join(dir, "gw-pki"),
      servers: [{ name: "legacy", endpoint: legacy, security_mode: "None", allow_unsecured: true, reconnect_min_ms: 200 }],
      front: { server: "legacy", host: "127.0.0.1", port: 0, users_file: usersFile, limits: FRONT_LIMITS, roles: { reader: { nodes: [{ browse_path: "Bench", allow: ["browse", "read", "subscribe"] }] } } },
    });
    const log = pino({ level: "silent" });
    svc = new OpcuaService({ config, deviceId: "bench", points: [], events: { record: () => undefined }, log });
    await svc.start();
    const front = svc.front!;
    await until(() => front.status().state === "serving", 30_000, "the front to mirror the legacy server");
    const frontTarget: PeerTarget = { endpoint: `opc.tcp://127.0.0.1:${front.port}`, user: USER };
    const direct: PeerTarget = { endpoint: legacy };
    // The bench client's certificate is refused at its first connection; trust it as an operator would.
    await peer.ask({ kind: "connect", ...frontTarget }).catch(() => undefined);
    for (const e of svc.pki().filter((x) => x.list === "clients" && x.state === "rejected")) await svc.pkiTrust(e.thumbprint, "bench");
    await peer.ask({ kind: "connect", ...frontTarget });

    const ms = Number(process.env.GW_OPCUA_BENCH_MS ?? 3000);
    const cpu = new CpuSampler();
    // What the front process spends with no client at all (its timers, the link's keep-alive, GC).
    const t0 = performance.timeOrigin + performance.now();
    cpu.start();
    await new Promise((r) => setTimeout(r, 2000));
    const t1 = performance.timeOrigin + performance.now();
    const idleUsPerMs = cpu.stop(t0, t1) / (t1 - t0);
    /** A round; through the front, with the front's CPU time per operation. */
    const ask = async (t: PeerTarget, m: PeerRequest): Promise<LoadFigures & { front_cpu_us_per_op?: number; front_cpu_us_per_op_above_idle?: number }> => {
      if (t !== frontTarget) return peer!.ask<LoadFigures>(m);
      cpu.start();
      const r = await peer!.ask<LoadFigures>(m);
      const used = cpu.stop(r.from, r.to);
      const ops = (r.per_s * (r.to - r.from)) / 1000;
      return { ...r, front_cpu_us_per_op: ops ? Math.round(used / ops) : 0, front_cpu_us_per_op_above_idle: ops ? Math.round((used - idleUsPerMs * (r.to - r.from)) / ops) : 0 };
    };
    const security = { direct: "None, anonymous", front: "SignAndEncrypt Basic256Sha256, user name and password (front to device: None)" };
    const rows: Record<string, unknown>[] = [];
    const reads = [
      { clients: 1, nodesPerRead: 1 },
      { clients: 8, nodesPerRead: 10 },
    ];
    for (const r of reads) {
      const d: LoadFigures[] = [];
      const f: (LoadFigures & { front_cpu_us_per_op?: number; front_cpu_us_per_op_above_idle?: number })[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const order = i % 2 ? [frontTarget, direct] : [direct, frontTarget];
        for (const t of order) (t === direct ? d : f).push(await ask(t, { kind: "read", ...t, ...r, durationMs: ms, warmupMs: 500 }));
      }
      rows.push(row(`read, ${r.clients} client${r.clients > 1 ? "s" : ""} × ${r.nodesPerRead} node${r.nodesPerRead > 1 ? "s" : ""} per Read, one request in flight each, ${NODES} nodes mirrored, every node changed every ${UPDATE_MS} ms`, "reads/s", d, f, security));
    }
    const sub = { nodes: NODES, publishingMs: UPDATE_MS / 2 };
    const d: LoadFigures[] = [];
    const f: (LoadFigures & { front_cpu_us_per_op?: number; front_cpu_us_per_op_above_idle?: number })[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const order = i % 2 ? [frontTarget, direct] : [direct, frontTarget];
      for (const t of order) (t === direct ? d : f).push(await ask(t, { kind: "subscribe", ...t, ...sub, durationMs: ms, warmupMs: 1000 }));
    }
    rows.push(row(`subscription, 1 client, ${sub.nodes} monitored items (sampling 0, queue 1, publishing ${sub.publishingMs} ms), every node changed every ${UPDATE_MS} ms; latency from the device setting a value to the client`, "notifications/s", d, f, security));
    return {
      placement: pin ? `front on CPU 0, device and clients (two processes) on CPU ${pin.load} (taskset)` : "unpinned (GW_BENCH_PIN=0 or one CPU)",
      rounds: ROUNDS,
      round_ms: ms,
      front_idle_cpu_ms_per_s: Math.round(idleUsPerMs * 10) / 10,
      front_limits: { ...FRONT_LIMITS, rest: "defaults" },
      rows,
      rss_mb_front_process: Math.round(process.memoryUsage().rss / 1024 / 1024),
      front: front.status(),
    };
  } finally {
    await svc?.stop();
    peer?.stop();
    device?.stop();
    pin?.unpin();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * This process's CPU time, sampled every 100 ms while the front is loaded: the front's CPU cost
 * per operation, a figure the other load on a shared machine moves far less than latency.
 * (Sampled every 20 ms, process.cpuUsage itself showed up in a CPU profile of the bench.)
 */
class CpuSampler {
  private samples: [number, number][] = [];
  private timer: NodeJS.Timeout | undefined;
  start(): void {
    this.samples = [];
    const take = () => {
      const u = process.cpuUsage();
      this.samples.push([performance.timeOrigin + performance.now(), u.user + u.system]);
    };
    take();
    this.timer = setInterval(take, 100);
  }
  /** CPU microseconds spent between two wall-clock times (ms), from the nearest samples inside. */
  stop(from: number, to: number): number {
    clearInterval(this.timer);
    const u = process.cpuUsage();
    this.samples.push([performance.timeOrigin + performance.now(), u.user + u.system]);
    const a = this.samples.find((x) => x[0] >= from) ?? this.samples[0]!;
    const b = [...this.samples].reverse().find((x) => x[0] <= to) ?? this.samples.at(-1)!;
    // Scaled to the whole window (the samples inside it cover slightly less).
    return b[0] > a[0] ? ((b[1] - a[1]) * (to - from)) / (b[0] - a[0]) : 0;
  }
}

function row(configuration: string, unit: string, d: LoadFigures[], f: (LoadFigures & { front_cpu_us_per_op?: number; front_cpu_us_per_op_above_idle?: number })[], security: Record<string, string>): Record<string, unknown> {
  const med = (xs: (number | null)[]) => {
    const s = xs.filter((x): x is number => x !== null).sort((a, b) => a - b);
    return s.length ? s[Math.floor(s.length / 2)]! : null;
  };
  const sum = (xs: LoadFigures[]) => ({ per_s: med(xs.map((x) => x.per_s)), unit, p50_ms: med(xs.map((x) => x.p50_ms)), p99_ms: med(xs.map((x) => x.p99_ms)), errors: xs.reduce((n, x) => n + x.errors, 0), rounds: xs.map((x) => x.per_s) });
  const a = sum(d);
  const b = { ...sum(f), cpu_us_per_op: med(f.map((x) => x.front_cpu_us_per_op ?? null)), cpu_us_per_op_above_idle: med(f.map((x) => x.front_cpu_us_per_op_above_idle ?? null)) };
  const ratio = (x: number | null, y: number | null) => (x && y !== null ? Math.round((y / x) * 1000) / 1000 : null);
  return {
    configuration,
    security,
    direct: a,
    front: b,
    throughput_ratio: ratio(a.per_s, b.per_s),
    p50_ratio: ratio(a.p50_ms, b.p50_ms),
    p99_ratio: ratio(a.p99_ms, b.p99_ms),
  };
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
