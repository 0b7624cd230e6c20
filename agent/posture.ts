import { execFile } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { release } from "node:os";
import { z } from "zod";
import type { Config } from "./config/schema";
import { LEGACY_POLICIES } from "../protocols/opcua/names";
import { OcsfClass } from "./core/events";
import type { EventSink, SeverityId } from "./core/events";
import type { Posture, PostureProbe } from "./heartbeat";
import { splitHostPort } from "./core/host-port";
import { withinMs } from "./core/time-limit";
import { currentVersion } from "../firmware-hooks/standalone";
import { UpdateState } from "../firmware-hooks/state";
import { secretFilesOf } from "./doctor/secrets";
import { CERT_WARN_DAYS, certificateFilesOf, certificateProblem, certificateStatus, type CertificateStatus } from "./doctor/certificates";

/** How long the posture waits for systeminformation's figures (a hung command or /sys read). */
const SYSTEM_FIGURES_MS = 10_000;

/**
 * The device's posture, in every heartbeat and from `gatewarden posture`: the probe's load,
 * CPU, memory, disk and temperature (systeminformation, cached by the probe), outbox use,
 * clock synchronisation and offset, listening TCP ports against those the config declares,
 * kernel and OS, secure boot, update slot and version, the integrity state, and the mode of each
 * secret file the config names (one readable by others, or gone, is a finding: the next start
 * would refuse, and until then the key is exposed), and how long each certificate it names has
 * left (one within `cert_warn_days`, expired, not yet valid or unreadable is a finding). Everything
 * here but the clock is read from /proc, /sys and /etc; the clock command runs at most once
 * per `posture.cache_ms`. With a `posture` section, a listener the config does not declare is
 * a finding (once per listener).
 */
export const postureSchema = z.strictObject({
  /** TCP ports expected to listen besides Gatewarden's own (ssh, the update engine...). */
  declared_ports: z.array(z.number().int().min(1).max(65535)).max(1024).default([]),
  cache_ms: z.number().int().min(1000).max(3_600_000).default(60_000),
  /** A certificate the config names that expires within this many days is a finding (and a doctor warning). */
  cert_warn_days: z.number().int().min(1).max(365).default(CERT_WARN_DAYS),
});
export type PostureConfig = z.output<typeof postureSchema>;

export interface Listener {
  address: string;
  port: number;
}

const MAX_LISTENERS = 256;

/** Listening TCP sockets from /proc/net/tcp and tcp6 (state 0A), at most 256. */
export function tcpListeners(): Listener[] {
  const out: Listener[] = [];
  const seen = new Set<string>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(f, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const p = line.trim().split(/\s+/);
      if (p[3] !== "0A" || !p[1]) continue;
      const [hex, portHex] = p[1].split(":");
      const address = hex!.length === 8 ? [3, 2, 1, 0].map((i) => parseInt(hex!.slice(i * 2, i * 2 + 2), 16)).join(".") : hex === "0".repeat(32) ? "::" : `ipv6:${hex}`;
      const l = { address, port: parseInt(portHex!, 16) };
      const k = `${l.address}:${l.port}`;
      if (!seen.has(k) && out.length < MAX_LISTENERS) out.push(l);
      seen.add(k);
    }
  }
  return out.sort((a, b) => a.port - b.port);
}

function osName(): string | null {
  try {
    return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? null;
  } catch {
    return null;
  }
}

/** UEFI SecureBoot variable when the platform exposes it, else "unknown" (e.g. a Raspberry Pi). */
function secureBoot(): "enabled" | "disabled" | "unknown" {
  try {
    const b = readFileSync("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c");
    return b[b.length - 1] === 1 ? "enabled" : "disabled";
  } catch {
    return "unknown";
  }
}

function bootSlot(): string | null {
  try {
    return /(?:^|\s)rauc\.slot=(\S+)/.exec(readFileSync("/proc/cmdline", "utf8"))?.[1] ?? null;
  } catch {
    return null;
  }
}

interface Clock {
  synchronized: boolean | null;
  offset_ms: number | null;
  source: string;
}

function run(cmd: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => execFile(cmd, args, { timeout: 3000, maxBuffer: 16 * 1024 }, (err, out) => resolve(err ? null : out)));
}

/** chrony's tracking (offset and leap status), else systemd's NTPSynchronized, else unknown. */
async function clock(): Promise<Clock> {
  const chrony = await run("chronyc", ["-c", "tracking"]);
  const f = chrony?.trim().split(",");
  if (f && f.length > 13) return { synchronized: f[13] !== "Not synchronised", offset_ms: Math.round(Number(f[4]) * 1e6) / 1e3, source: "chrony" };
  const td = await run("timedatectl", ["show", "--property=NTPSynchronized", "--value"]);
  if (td !== null && /^(yes|no)$/.test(td.trim())) return { synchronized: td.trim() === "yes", offset_ms: null, source: "systemd-timedated" };
  return { synchronized: null, offset_ms: null, source: "unknown" };
}

export class DevicePosture {
  private clockCache: { at: number; value: Clock } | undefined;
  private readonly reported = new Set<string>();
  private readonly kernel = release();
  private readonly os = osName();

  constructor(
    private readonly o: {
      config: Config;
      probe: Pick<PostureProbe, "read">;
      outbox: () => { file_bytes: number; budget_bytes: number };
      integrity: () => string;
      sink: EventSink;
      /** How long to wait for the probe's figures (default SYSTEM_FIGURES_MS). */
      figuresTimeoutMs?: number;
    },
  ) {}

  /** Gatewarden's own listeners plus `posture.declared_ports`. */
  declaredPorts(): Set<number> {
    const c = this.o.config;
    return new Set([...(c.modbus?.listeners ?? []).map((l) => splitHostPort(l.listen).port), ...(c.opcua?.front?.port ? [c.opcua.front.port] : []), ...(c.posture?.declared_ports ?? [])]);
  }

  /** Upstream OPC UA servers that opted into a deprecated (SHA-1) policy (`allow_legacy_policy`). */
  legacyOpcua(): { server: string; endpoint: string; policy: string }[] {
    const legacy: readonly string[] = LEGACY_POLICIES;
    return (this.o.config.opcua?.servers ?? []).filter((s) => s.security_mode !== "None" && legacy.includes(s.security_policy)).map((s) => ({ server: s.name, endpoint: s.endpoint, policy: s.security_policy }));
  }

  /**
   * Each private key and secret file the config names: its mode and whether it is owner-only.
   * Checked at start (the daemon refuses otherwise) and here at every heartbeat: a file widened
   * or removed while the daemon runs is a finding (severity 4), once per file, mode and boot.
   */
  secretFiles(): { key: string; path: string; mode: string | null; owner_only: boolean | null; error?: string }[] {
    return secretFilesOf(this.o.config).map(({ key, path }) => {
      try {
        const mode = statSync(path).mode & 0o777;
        const m = `0${mode.toString(8)}`;
        const ownerOnly = (mode & 0o077) === 0;
        if (!ownerOnly) {
          this.finding(`secret:${key}:${m}`, "Secret file readable by others", `Secret file readable by others: ${path} (${key}) has mode ${m} while the daemon runs; it must be readable by its owner only (chmod 600 ${path}), and the next start refuses it`, { secret_file: { key, path, mode: m } }, 4);
        }
        return { key, path, mode: m, owner_only: ownerOnly };
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? "error";
        this.finding(`secret:${key}:${code}`, "Secret file gone", `Secret file gone: ${path} (${key}) cannot be read while the daemon runs (${code}); the next start refuses`, { secret_file: { key, path, error: code } }, 4);
        return { key, path, mode: null, owner_only: null, error: code };
      }
    });
  }

  /**
   * Each certificate the config names and how long it has left. One that expires within
   * `posture.cert_warn_days` (default 30) is a finding at severity 3, one expired or unreadable at
   * severity 4, one not yet valid at 3; once per file, state and certificate, per boot.
   */
  certificates(now = Date.now()): CertificateStatus[] {
    const c = this.o.config;
    const out = certificateStatus(certificateFilesOf(c), now, c.posture?.cert_warn_days ?? CERT_WARN_DAYS);
    for (const s of out) {
      const problem = certificateProblem(s);
      if (!problem) continue;
      this.finding(`cert:${s.key}:${s.state}:${s.not_after ?? s.error}`, problem.title, `${problem.title}: ${problem.text}`, { certificate: s }, s.state === "expired" || s.state === "unreadable" ? 4 : 3);
    }
    return out;
  }

  async read(): Promise<Record<string, unknown>> {
    const c = this.o.config;
    const cacheMs = c.posture?.cache_ms ?? 60_000;
    // systeminformation's figures within 10 s, or without them: the checks below still run.
    const limit = this.o.figuresTimeoutMs ?? SYSTEM_FIGURES_MS;
    const base: Posture | Record<string, string> = await withinMs(this.o.probe.read(), limit, `system figures not read within ${limit} ms`).catch((e: Error) => ({ figures_error: e.message }));
    if (!this.clockCache || Date.now() - this.clockCache.at > cacheMs) this.clockCache = { at: Date.now(), value: await clock() };
    const ob = this.o.outbox();
    const declared = this.declaredPorts();
    const listeners = tcpListeners().map((l) => ({ ...l, declared: declared.has(l.port) }));
    if (c.posture) for (const l of listeners) if (!l.declared) this.undeclared(l);
    const legacy = this.legacyOpcua();
    for (const l of legacy) this.legacyPolicy(l);
    let update: Record<string, unknown> = { slot: bootSlot(), version: null, pending: null };
    if (c.update) {
      try {
        const st = new UpdateState(c.update.state_dir);
        update = { slot: bootSlot(), version: st.committed().version ?? currentVersion(c.update.releases_dir), counter: st.committed().counter, pending: st.pending()?.version ?? null };
      } catch (e) {
        update = { ...update, error: (e as Error).message };
      }
    }
    return {
      ...base,
      outbox_used_pct: ob.budget_bytes ? Math.round((ob.file_bytes / ob.budget_bytes) * 1000) / 10 : null,
      clock: this.clockCache.value,
      listeners,
      undeclared_listeners: listeners.filter((l) => !l.declared).length,
      kernel: this.kernel,
      os: this.os,
      secure_boot: secureBoot(),
      update,
      integrity: this.o.integrity(),
      opcua_legacy_policies: legacy,
      secret_files: this.secretFiles(),
      certificates: this.certificates(),
    };
  }

  /** A legacy OPC UA policy in use: a finding at severity 3, once per server and boot. */
  private legacyPolicy(l: { server: string; endpoint: string; policy: string }): void {
    const message = `Legacy OPC UA security policy: server ${l.server} (${l.endpoint}) is reached with ${l.policy} (SHA-1), opted in with allow_legacy_policy; the front never offers it`;
    this.finding(`opcua-legacy:${l.server}`, "Legacy OPC UA security policy", message, { opcua_legacy_policy: l });
  }

  private undeclared(l: Listener): void {
    const k = `${l.address}:${l.port}`;
    this.finding(`listener:${k}`, "Undeclared listener", `Undeclared listener: TCP ${k} is listening but the config does not declare port ${l.port}`, { listener: l });
  }

  /** A posture finding (severity 3 unless given), once per key and boot. */
  private finding(key: string, title: string, message: string, posture: Record<string, unknown>, severity: SeverityId = 3): void {
    if (this.reported.has(key) || this.reported.size > 4096) return;
    this.reported.add(key);
    this.o.sink.record({
      class: "finding",
      severity,
      ocsf: { class_uid: OcsfClass.DetectionFinding, activity_id: 1, message, finding_info: { title, uid: `posture:${key}`, types: ["posture"] }, unmapped: { posture } },
    });
  }
}
