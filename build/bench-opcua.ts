/**
 * OPC UA benchmark: read round trips per second with p50/p99 latency, and subscription
 * notifications per second with p50/p99 latency (from the device setting a value to the
 * client receiving it), for a client talking to the legacy device directly (security None,
 * anonymous: what SCADA does today) and through Gatewarden's front (SignAndEncrypt with
 * Basic256Sha256 and a user: what it does behind the gateway), in the same run, as ratios.
 *
 * Placement as in the Modbus benchmark: the front (the path under test) runs in this process,
 * on CPU 0 when pinned; the legacy device and the clients share one child process on the
 * other CPUs (bench-opcua-peer.ts). Rounds alternate direct and front; rows give medians.
 * GW_OPCUA_BENCH_MS sets the measuring time of each round (default 3000).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { opcuaConfigSchema } from "../protocols/opcua/config";
import { hashPassword, writeUsers } from "../protocols/opcua/front-users";
import { OpcuaService } from "../protocols/opcua/service";
import type { LoadFigures, PeerRequest, PeerTarget } from "./bench-opcua-peer";
import { pinForBench } from "./bench-modbus";

const NODES = 200;
const ROUNDS = 3;
const USER = { name: "bench", password: "bench-scada-42" };

interface Peer {
  first: { port: number };
  ask<R>(msg: PeerRequest): Promise<R>;
  stop(): void;
}

function startPeer(dir: string, cpuList: string | null): Promise<Peer> {
  const args = [process.argv[1]!, "opcua-peer"];
  const env = { ...process.env, GW_BENCH_DIR: dir, GW_BENCH_NODES: String(NODES) };
  const proc: ChildProcess = cpuList
    ? spawn("taskset", ["-c", cpuList, process.execPath, ...args], { stdio: ["ignore", "ignore", "inherit", "ipc"], env })
    : spawn(process.execPath, args, { stdio: ["ignore", "ignore", "inherit", "ipc"], env });
  return new Promise((resolve, reject) => {
    proc.once("error", reject);
    proc.once("exit", (code) => reject(new Error(`OPC UA bench peer exited with ${code}`)));
    proc.once("message", (first) =>
      resolve({
        first: first as { port: number },
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
  let peer: Peer | undefined;
  let svc: OpcuaService | undefined;
  try {
    peer = await startPeer(dir, pin?.load ?? null);
    const legacy = `opc.tcp://127.0.0.1:${peer.first.port}`;
    const usersFile = join(dir, "users.json");
    writeUsers(usersFile, { version: 1, users: { [USER.name]: { role: "reader", hash: hashPassword(USER.password), changed: new Date().toISOString() } } });
    const config = opcuaConfigSchema.parse({
      pki_dir: join(dir, "gw-pki"),
      servers: [{ name: "legacy", endpoint: legacy, security_mode: "None", allow_unsecured: true, reconnect_min_ms: 200 }],
      front: { server: "legacy", host: "127.0.0.1", port: 0, users_file: usersFile, roles: { reader: { nodes: [{ browse_path: "Bench", allow: ["browse", "read", "subscribe"] }] } } },
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
    const security = { direct: "None, anonymous", front: "SignAndEncrypt Basic256Sha256, user name and password (front to device: None)" };
    const rows: Record<string, unknown>[] = [];
    const reads = [
      { clients: 1, nodesPerRead: 1 },
      { clients: 8, nodesPerRead: 10 },
    ];
    for (const r of reads) {
      const d: LoadFigures[] = [];
      const f: LoadFigures[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const order = i % 2 ? [frontTarget, direct] : [direct, frontTarget];
        for (const t of order) (t === direct ? d : f).push(await peer.ask<LoadFigures>({ kind: "read", ...t, ...r, durationMs: ms, warmupMs: 500 }));
      }
      rows.push(row(`read, ${r.clients} client${r.clients > 1 ? "s" : ""} × ${r.nodesPerRead} node${r.nodesPerRead > 1 ? "s" : ""} per Read, one request in flight each, ${NODES} nodes mirrored`, "reads/s", d, f, security));
    }
    const sub = { nodes: NODES, updateMs: 100 };
    const d: LoadFigures[] = [];
    const f: LoadFigures[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const order = i % 2 ? [frontTarget, direct] : [direct, frontTarget];
      for (const t of order) (t === direct ? d : f).push(await peer.ask<LoadFigures>({ kind: "subscribe", ...t, ...sub, durationMs: ms, warmupMs: 1000 }));
    }
    rows.push(row(`subscription, 1 client, ${sub.nodes} monitored items (sampling 0, queue 1, publishing ${sub.updateMs / 2} ms), every node changed every ${sub.updateMs} ms; latency from the device setting a value to the client`, "notifications/s", d, f, security));
    return {
      placement: pin?.placement.replace("pipe and proxy", "front") ?? "unpinned (GW_BENCH_PIN=0 or one CPU)",
      rounds: ROUNDS,
      round_ms: ms,
      rows,
      rss_mb_front_process: Math.round(process.memoryUsage().rss / 1024 / 1024),
      front: front.status(),
    };
  } finally {
    await svc?.stop();
    peer?.stop();
    pin?.unpin();
    rmSync(dir, { recursive: true, force: true });
  }
}

function row(configuration: string, unit: string, d: LoadFigures[], f: LoadFigures[], security: Record<string, string>): Record<string, unknown> {
  const med = (xs: (number | null)[]) => {
    const s = xs.filter((x): x is number => x !== null).sort((a, b) => a - b);
    return s.length ? s[Math.floor(s.length / 2)]! : null;
  };
  const sum = (xs: LoadFigures[]) => ({ [unit]: med(xs.map((x) => x.per_s)), p50_ms: med(xs.map((x) => x.p50_ms)), p99_ms: med(xs.map((x) => x.p99_ms)), errors: xs.reduce((n, x) => n + x.errors, 0), rounds: xs.map((x) => x.per_s) });
  const a = sum(d);
  const b = sum(f);
  const ratio = (x: number | null, y: number | null) => (x && y !== null ? Math.round((y / x) * 1000) / 1000 : null);
  return {
    configuration,
    security,
    direct: a,
    front: b,
    throughput_ratio: ratio(a[unit] as number, b[unit] as number),
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
