import { createPublicKey } from "node:crypto";
import { connect } from "node:net";
import { controlCall } from "../agent/core/control-client";
import { describeError } from "../agent/core/errors";
import { checkEnvelope } from "../agent/core/envelope";
import { loadDeviceKey } from "../agent/core/keys";
import { splitHostPort } from "../agent/core/host-port";
import type { ConfigFile } from "./site";

/**
 * The health verdict after booting into a new version: every check must pass before the
 * deadline (`update.health.deadline_ms`), else the update is rolled back.
 *  - daemon: the control socket answers `status`
 *  - outbox: SQLite's quick_check of the outbox passed and its newest events verify (hash and
 *    signature with this device's key). The running daemon holds the file exclusively: it
 *    reports the check it ran at its start and its newest committed events; with no daemon
 *    answering, the file is opened read-only and checked here.
 *  - listeners: every configured Modbus listener accepts a TCP connection
 *  - soc: the upstream is connected (unless `update.health.require_soc: false`)
 */
export interface HealthCheck {
  name: "daemon" | "outbox" | "listeners" | "soc";
  ok: boolean;
  detail: string;
}

export interface HealthVerdict {
  ok: boolean;
  checks: HealthCheck[];
  elapsed_ms: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function healthCheck(loaded: ConfigFile, deadlineMs: number, requireSoc: boolean): Promise<HealthVerdict> {
  const start = Date.now();
  const end = start + deadlineMs;
  let checks: HealthCheck[] = [];
  for (;;) {
    checks = await once(loaded, requireSoc, Math.max(200, Math.min(5000, end - Date.now())));
    if (checks.every((c) => c.ok) || Date.now() >= end) break;
    await sleep(Math.min(250, Math.max(0, end - Date.now())));
  }
  return { ok: checks.every((c) => c.ok), checks, elapsed_ms: Date.now() - start };
}

async function once(loaded: ConfigFile, requireSoc: boolean, timeoutMs: number): Promise<HealthCheck[]> {
  const c = loaded.config;
  const out: HealthCheck[] = [];
  let status: DaemonStatus | undefined;
  try {
    status = (await controlCall(c.control.socket, "status", {}, timeoutMs)) as typeof status;
    out.push({ name: "daemon", ok: true, detail: `control socket ${c.control.socket} answers` });
  } catch (e) {
    out.push({ name: "daemon", ok: false, detail: describeError(e) });
  }
  out.push(status ? await daemonOutboxCheck(loaded, status, timeoutMs) : await outboxCheck(loaded));
  const listeners = c.modbus?.listeners ?? [];
  const bad: string[] = [];
  for (const l of listeners) {
    const { host, port } = splitHostPort(l.listen);
    if (!(await accepts(host === "0.0.0.0" || host === "" ? "127.0.0.1" : host === "::" ? "::1" : host, port, timeoutMs))) bad.push(`${l.name} (${l.listen})`);
  }
  out.push({ name: "listeners", ok: bad.length === 0, detail: bad.length ? `not listening: ${bad.join(", ")}` : `${listeners.length} listening` });
  if (requireSoc) {
    const st = status?.upstream?.state;
    out.push({ name: "soc", ok: st === "up", detail: st === "up" ? "upstream connected" : `upstream ${st ?? "unknown"}${status?.upstream?.last_error ? `: ${status.upstream.last_error}` : ""}` });
  }
  return out;
}

interface DaemonStatus {
  upstream?: { state?: string; last_error?: string | null };
  outbox?: { check?: string; storage?: { mode?: string } };
}

/** The newest events verify with this device's key; undefined when they do, else why not. */
function newestFail(loaded: ConfigFile, bodies: readonly unknown[]): string | undefined {
  const pub = createPublicKey(loadDeviceKey(loaded.config.device.key));
  for (const env of bodies) {
    const r = checkEnvelope(env, pub);
    if (r !== "ok") return `a stored event fails its check (${r})`;
  }
  return undefined;
}

/** The outbox as the running daemon reports it: its quick_check at start, its newest events. */
async function daemonOutboxCheck(loaded: ConfigFile, status: DaemonStatus, timeoutMs: number): Promise<HealthCheck> {
  try {
    if (status.outbox?.storage?.mode === "memory") return { name: "outbox", ok: false, detail: "the daemon keeps its outbox in memory: the file could not be opened" };
    const qc = status.outbox?.check;
    if (qc !== "ok") return { name: "outbox", ok: false, detail: `quick_check: ${qc ?? "not reported by the daemon"}` };
    const recent = (await controlCall(loaded.config.control.socket, "events.recent", { limit: 64 }, timeoutMs)) as unknown[];
    const bad = newestFail(loaded, recent);
    if (bad) return { name: "outbox", ok: false, detail: bad };
    return { name: "outbox", ok: true, detail: `quick_check ok (the daemon's, at its start); newest ${recent.length} events verify` };
  } catch (e) {
    return { name: "outbox", ok: false, detail: describeError(e) };
  }
}

async function outboxCheck(loaded: ConfigFile): Promise<HealthCheck> {
  const c = loaded.config;
  try {
    const Database = (await import("better-sqlite3")).default;
    const db = new Database(c.buffer.path, { readonly: true, fileMustExist: true });
    try {
      const qc = db.pragma("quick_check", { simple: true }) as string;
      if (qc !== "ok") return { name: "outbox", ok: false, detail: `quick_check: ${qc}` };
      const rows = db.prepare("SELECT body FROM events ORDER BY id DESC LIMIT 64").pluck().all() as string[];
      const bad = newestFail(loaded, rows.map((b) => JSON.parse(b) as unknown));
      if (bad) return { name: "outbox", ok: false, detail: bad };
      return { name: "outbox", ok: true, detail: `quick_check ok; newest ${rows.length} events verify` };
    } finally {
      db.close();
    }
  } catch (e) {
    return { name: "outbox", ok: false, detail: describeError(e) };
  }
}

function accepts(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const t = setTimeout(() => done(false), timeoutMs);
    const done = (ok: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}
