/**
 * Footprint: the RSS of the real daemon (`dist/gatewarden.cjs run`) without OPC UA (target
 * ≤ 80 MB) as the systemd unit starts it (its Node options and environment) and with Node's
 * defaults, and with an `opcua` section whose front mirrors a legacy server of 200 variables
 * (each changed every 100 ms, as in the opcua section, with its per-address limits raised):
 * the core's RSS and the OPC UA process's (target ≤ 160 MB), idle once the front serves and
 * after clients have read through it. RSS is VmRSS from /proc, sampled every 500 ms for
 * GW_FOOTPRINT_MS (default 5000) after the daemon is up; rows give median and max.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { controlCall } from "../agent/core/control-client";
import { hashPassword, writeUsers } from "../protocols/opcua/front-users";
import type { OpcuaProcessStatus } from "../protocols/opcua/process-protocol";
import { FRONT_LIMITS, NODES, startPeer, UPDATE_MS, USER, type Peer } from "./bench-opcua";
import type { LoadFigures, PeerTarget } from "./bench-opcua-peer";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(ROOT, "dist", "gatewarden.cjs");
const SAMPLE_MS = 500;

type Sampled = { median_mb: number; max_mb: number; samples: number };

export async function benchFootprint(): Promise<Record<string, unknown>> {
  const ms = Number(process.env.GW_FOOTPRINT_MS ?? 5000);
  const dir = mkdtempSync(join(tmpdir(), "gw-bench-footprint-"));
  let device: Peer<{ port: number; namespaceUri: string }> | undefined;
  let peer: Peer<unknown> | undefined;
  try {
    const cfg = join(dir, "gatewarden.yaml");
    const init = spawnSync(process.execPath, [BIN, "init", "--dir", dir, "--device-id", "bench-footprint"], { encoding: "utf8" });
    if (init.status !== 0) throw new Error(`gatewarden init failed: ${init.stderr}`);
    const sock = join(dir, "data", "gatewarden.sock");

    // 1. The core alone: no opcua section, so no OPC UA process and no node-opcua loaded; as
    // the systemd unit starts it, and with Node's and glibc's defaults.
    const unit = unitLaunch();
    const bare = await daemon(cfg, sock, unit);
    const core = await sample([bare.proc.pid!], ms);
    await bare.stop();
    const plain = await daemon(cfg, sock, { args: [], env: {} });
    const coreDefaults = await sample([plain.proc.pid!], ms);
    await plain.stop();

    // 2. With the front on a legacy server of NODES variables (security None, as in the field).
    const env = { GW_BENCH_DIR: dir, GW_BENCH_NODES: String(NODES), GW_BENCH_UPDATE_MS: String(UPDATE_MS) };
    device = await startPeer("opcua-device", env, null);
    peer = await startPeer("opcua-clients", { ...env, GW_BENCH_NSURI: device.first.namespaceUri }, null);
    const usersFile = join(dir, "opcua-users.json");
    writeUsers(usersFile, { version: 1, users: { [USER.name]: { role: "reader", hash: hashPassword(USER.password), changed: new Date().toISOString() } } });
    appendFileSync(
      cfg,
      `
opcua:
  servers:
    - { name: legacy, endpoint: "opc.tcp://127.0.0.1:${device.first.port}", security_mode: None, allow_unsecured: true, reconnect_min_ms: 200 }
  front:
    server: legacy
    host: 127.0.0.1
    port: 0
    users_file: ${usersFile}
    limits: ${JSON.stringify(FRONT_LIMITS)}
    roles:
      reader:
        nodes:
          - { browse_path: Bench, allow: [browse, read, subscribe] }
`,
    );
    const ua = await daemon(cfg, sock, unit);
    try {
      type St = { process: OpcuaProcessStatus; front?: { state: string; port: number; mirrored_nodes: number } };
      // Until the daemon has started its OPC UA process, the command is not there yet.
      const st = async () => (await controlCall(sock, "opcua.status").catch(() => undefined)) as St | undefined;
      const end = Date.now() + 60_000;
      while ((await st())?.front?.state !== "serving") {
        if (Date.now() > end) throw new Error(`the front did not serve within 60 s: ${JSON.stringify(await st())}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const s = (await st())!;
      const child = s.process.pid!;
      const idle = await sample([ua.proc.pid!, child], ms);
      // Clients read every mirrored node through the front (the bench client's certificate is
      // refused at its first connection and trusted, as an operator would).
      const target: PeerTarget = { endpoint: `opc.tcp://127.0.0.1:${s.front!.port}`, user: USER };
      await peer.ask({ kind: "connect", ...target }).catch(() => undefined);
      type Entry = { list: string; state: string; thumbprint: string };
      const refused = async () => ((await controlCall(sock, "opcua.pki.list")) as Entry[]).filter((e) => e.list === "clients" && e.state === "rejected");
      const until = Date.now() + 30_000;
      while (!(await refused()).length) {
        if (Date.now() > until) throw new Error("the front did not list the bench client's refused certificate");
        await new Promise((r) => setTimeout(r, 200));
      }
      for (const e of await refused()) await controlCall(sock, "opcua.pki.trust", { thumbprint: e.thumbprint, by: "bench" });
      await peer.ask({ kind: "connect", ...target }).catch((e: Error) => lastEvents(sock, e));
      const load = await peer.ask<LoadFigures>({ kind: "read", ...target, clients: 4, nodesPerRead: 50, durationMs: ms, warmupMs: 500 }).catch((e: Error) => lastEvents(sock, e));
      const loaded = await sample([ua.proc.pid!, child], ms);
      return {
        core_without_opcua: { rss: core[0], target_mb: 80, launch: unitText(unit) },
        core_without_opcua_node_defaults: { rss: coreDefaults[0] },
        with_front: {
          mirrored_nodes: s.front!.mirrored_nodes,
          core_idle: idle[0],
          opcua_process_idle: idle[1],
          load: { configuration: "4 clients reading 50 nodes per Read through the front, one Read in flight each", reads_per_s: load.per_s, errors: load.errors },
          core_after_reads: loaded[0],
          opcua_process_after_reads: loaded[1],
          opcua_target_mb: 160,
          max_rss_mb: s.process.max_rss_mb,
        },
        sampling: `VmRSS every ${SAMPLE_MS} ms for ${ms} ms`,
      };
    } finally {
      await ua.stop();
    }
  } finally {
    peer?.stop();
    device?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Fails with the daemon's last events (a refused login says why). */
async function lastEvents(sock: string, e: Error): Promise<never> {
  const recent = (await controlCall(sock, "events.recent", { limit: 5 })) as { ocsf: { message: string } }[];
  throw new Error(`${e.message}; the daemon's last events: ${recent.map((r) => r.ocsf.message).join(" | ")}`);
}

type Launch = { args: string[]; env: Record<string, string> };

/** Node's options and the environment the systemd unit (build/package/gatewarden.service) starts the daemon with. */
function unitLaunch(): Launch {
  const text = readFileSync(join(ROOT, "build", "package", "gatewarden.service"), "utf8");
  const exec = /^ExecStart=@NODE@ (.*?) @PREFIX@/m.exec(text);
  const env = Object.fromEntries([...text.matchAll(/^Environment=(\w+)=(\S*)$/gm)].map((m) => [m[1]!, m[2]!]));
  return { args: exec ? exec[1]!.split(/\s+/) : [], env };
}

const unitText = (l: Launch) => [...Object.entries(l.env).map(([k, v]) => `${k}=${v}`), "node", ...l.args].join(" ");

/** `gatewarden run` started with launch, resolved once its control socket answers. */
async function daemon(cfg: string, sock: string, launch: Launch): Promise<{ proc: ChildProcess; stop: () => Promise<void> }> {
  const proc = spawn(process.execPath, [...launch.args, BIN, "run", "--config", cfg], { env: { ...process.env, ...launch.env }, stdio: ["ignore", process.env.GW_FOOTPRINT_LOG ? "inherit" : "ignore", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const end = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the daemon exited with ${proc.exitCode}: ${err}`);
    if (await controlCall(sock, "status").then(() => true, () => false)) break;
    if (Date.now() > end) throw new Error(`the daemon did not answer within 60 s: ${err}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    proc,
    stop: async () => {
      proc.kill("SIGTERM");
      await exited;
    },
  };
}

/** VmRSS of each pid every SAMPLE_MS for ms; median and max per pid. */
async function sample(pids: number[], ms: number): Promise<Sampled[]> {
  const xs: number[][] = pids.map(() => []);
  const end = Date.now() + ms;
  while (Date.now() < end) {
    pids.forEach((p, i) => {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, "utf8"));
      if (m) xs[i]!.push(Number(m[1]) / 1024);
    });
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
  }
  return xs.map((v) => {
    const s = [...v].sort((a, b) => a - b);
    return { median_mb: Math.round(s[Math.floor(s.length / 2)] ?? 0), max_mb: Math.round(s[s.length - 1] ?? 0), samples: s.length };
  });
}
