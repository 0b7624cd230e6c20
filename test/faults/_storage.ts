import { execFileSync, spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { controlCall } from "../../agent/core/control-client";
import type { OutLine } from "../../agent/soc/verifier";
import { SimDevice } from "../../agent/demo/sim-server";
import { havePeer } from "../helpers/peers";
import { RawClient } from "../integration/modbus/_harness";
import { freePort } from "../integration/modbus/_peers";

/**
 * What the storage fault tests share: a Modbus proxy in the gateway's config in front of a
 * simulated PLC, a SCADA poller that measures every answer, the daemon's status and CPU, and
 * the filesystems the faults need (a loop-mounted ext4 image, a small tmpfs).
 */
export async function addModbusProxy(cfgFile: string): Promise<{ device: SimDevice; port: number }> {
  const device = new SimDevice({});
  const devPort = await device.listen(0);
  const port = await freePort();
  appendFileSync(
    cfgFile,
    `
modbus:
  listeners:
    - { name: scada, type: tcp, listen: "127.0.0.1:${port}" }
  upstreams:
    - { name: plc, type: tcp, target: "127.0.0.1:${devPort}" }
  routes:
    - { unit: 1, upstream: plc }
  policy:
    identities:
      - { match: { address: ["127.0.0.1"] }, role: scada }
    roles:
      scada: { units: [1], functions: [read-only], read: { holding: ["0-9"] } }
`,
  );
  return { device, port };
}

/** SCADA polling the proxy every 50 ms, reconnecting when the daemon restarts. */
export class ScadaPoller {
  private readonly samples: { at: number; ms: number | null }[] = [];
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(private readonly port: number) {}

  start(): void {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    let c: RawClient | undefined;
    while (!this.stopped) {
      if (!c || c.closed) c = await RawClient.connect(this.port).catch(() => undefined);
      const t0 = performance.now();
      const r = c ? await c.request(1, "03 0000 0002", 2000) : "no connection";
      this.samples.push({ at: Date.now(), ms: r === "030400000000" ? performance.now() - t0 : null });
      await new Promise((res) => setTimeout(res, 50));
    }
    c?.close();
  }

  /** Answers and failures since `from` (ms epoch), with the median answer time. */
  stats(from = 0, to = Infinity): { polls: number; answered: number; failed: number; p50_ms: number | null } {
    const s = this.samples.filter((x) => x.at >= from && x.at <= to);
    const ok = s.flatMap((x) => (x.ms === null ? [] : [x.ms])).sort((a, b) => a - b);
    return { polls: s.length, answered: ok.length, failed: s.length - ok.length, p50_ms: ok.length ? Math.round(ok[Math.floor(ok.length / 2)]! * 100) / 100 : null };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

export interface StorageStatus {
  outbox: { storage: { state: string; mode: string; error: string | null }; pending_in_memory: number };
  counters: { commit_errors: number; committed: number; dropped: number };
}

export async function daemonStatus(controlSocket: string): Promise<StorageStatus> {
  return (await controlCall(controlSocket, "status")) as StorageStatus;
}

/** CPU time (user + system) of a process so far, in ms, from /proc. */
export function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime in ticks (USER_HZ 100)
}

/** Event lines of the SOC's output whose OCSF body says `error_type`. */
export function told(lines: readonly OutLine[], errorType: string): OutLine[] {
  return lines.filter((l) => !("problem" in l) && (l.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === errorType);
}

const MKFS = "/usr/sbin/mkfs.ext4";

/** Why a filesystem for a fault cannot be made here, or undefined when it can (root, loop devices). */
export function mountUnavailable(): string | undefined {
  if (!havePeer(MKFS) || !havePeer("/usr/bin/mount")) return `${MKFS} or mount is missing`;
  const why = process.getuid?.() !== 0 ? "not root" : undefined;
  if (why && process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error(`mounting a loop image and a tmpfs needs root (GATEWARDEN_REQUIRE_PEERS=1): ${why}`);
  return why;
}

/**
 * An ext4 image loop-mounted at `dir/mnt` with `errors=remount-ro`: `failReadOnly()` makes the
 * kernel remount it read-only as it does after an I/O error on a failing SD card (ext4's
 * trigger_fs_error), with the daemon's files still open.
 */
export function ext4Image(dir: string, sizeMb = 64): { mnt: string; failReadOnly: () => void; unmount: () => void } {
  const img = join(dir, "ext4.img");
  const mnt = join(dir, "mnt");
  mkdirSync(mnt, { recursive: true });
  execFileSync("truncate", ["-s", `${sizeMb}M`, img]);
  execFileSync(MKFS, ["-q", "-F", img]);
  execFileSync("mount", ["-o", "loop,errors=remount-ro", img, mnt]);
  const dev = execFileSync("findmnt", ["-n", "-o", "SOURCE", mnt], { encoding: "utf8" }).trim().replace("/dev/", "");
  return {
    mnt,
    failReadOnly: () => {
      execFileSync("sh", ["-c", `echo storage-fault-test > /sys/fs/ext4/${dev}/trigger_fs_error`]);
      const opts = execFileSync("findmnt", ["-n", "-o", "OPTIONS", mnt], { encoding: "utf8" });
      if (!/(^|,)(ro|emergency_ro)(,|$)/.test(opts.trim())) throw new Error(`${mnt} did not become read-only: ${opts}`);
    },
    unmount: () => void spawnSync("umount", ["-l", mnt]),
  };
}

/** A tmpfs of `sizeMb` at `dir/tmpfs`. */
export function smallTmpfs(dir: string, sizeMb: number): { mnt: string; unmount: () => void } {
  const mnt = join(dir, "tmpfs");
  mkdirSync(mnt, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeMb}m`, "tmpfs", mnt]);
  return { mnt, unmount: () => void spawnSync("umount", ["-l", mnt]) };
}
