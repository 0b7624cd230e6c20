import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createConnection, createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { userInfo } from "node:os";
import { sleep } from "./fixture";
import { findPeer } from "./peers";

/** Where Mosquitto is (missing: the test skips, or fails with GATEWARDEN_REQUIRE_PEERS=1). */
export function findMosquitto(paths: readonly string[] = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"]): string | undefined {
  return findPeer(paths);
}

export const MOSQUITTO = findMosquitto();

/** A free TCP port on 127.0.0.1 (bound and released; the caller binds it next). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface MosquittoOptions {
  dir: string;
  /** TLS listener with client certificates required (mTLS); the certificate CN is the user name. */
  tls?: { ca: string; cert: string; key: string };
  /** ACL file contents (mosquitto acl_file syntax). */
  acl?: string;
  extra?: string[];
}

/**
 * A Mosquitto broker spawned with its own config on a free port of 127.0.0.1. `log` collects
 * its stderr (log_dest stderr, all log types), for assertions and for failure messages.
 */
export class Mosquitto {
  port = 0;
  log = "";
  private proc: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private readonly conf: string;
  readonly aclFile: string;

  constructor(private readonly o: MosquittoOptions) {
    this.conf = join(o.dir, "mosquitto.conf");
    this.aclFile = join(o.dir, "mosquitto.acl");
  }

  get url(): string {
    return `${this.o.tls ? "mqtts" : "mqtt"}://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (!MOSQUITTO) throw new Error("mosquitto is not installed");
    for (let attempt = 0; ; attempt++) {
      this.port = await freePort();
      this.writeConfig();
      try {
        await this.spawnAndWait();
        return;
      } catch (e) {
        if (attempt >= 2) throw e;
      }
    }
  }

  private writeConfig(): void {
    const o = this.o;
    const lines = [
      // Run as root (containers, CI), mosquitto drops to user "mosquitto", who cannot read
      // the test's private temp dir: keep the current user.
      `user ${userInfo().username}`,
      "per_listener_settings false",
      "persistence false",
      "log_dest stderr",
      "log_type all",
      "connection_messages true",
      `listener ${this.port} 127.0.0.1`,
      "set_tcp_nodelay true",
      "max_inflight_messages 0",
      "max_queued_messages 100000",
    ];
    if (o.tls) {
      lines.push(`cafile ${o.tls.ca}`, `certfile ${o.tls.cert}`, `keyfile ${o.tls.key}`, "require_certificate true", "use_identity_as_username true");
    } else lines.push("allow_anonymous true");
    if (o.acl !== undefined) {
      writeFileSync(this.aclFile, o.acl);
      lines.push(`acl_file ${this.aclFile}`);
    }
    lines.push(...(o.extra ?? []));
    writeFileSync(this.conf, lines.join("\n") + "\n");
  }

  private async spawnAndWait(): Promise<void> {
    const proc = spawn(MOSQUITTO!, ["-c", this.conf], { stdio: ["ignore", "ignore", "pipe"] });
    this.proc = proc;
    this.exited = new Promise((r) => proc.once("exit", () => r()));
    proc.stderr!.setEncoding("utf8");
    proc.stderr!.on("data", (d: string) => {
      this.log += d;
      if (this.log.length > 2_000_000) this.log = this.log.slice(-1_000_000);
    });
    let dead = false;
    void this.exited.then(() => (dead = true));
    const end = Date.now() + 10_000;
    while (Date.now() < end) {
      if (dead) throw new Error(`mosquitto exited at start:\n${this.log.slice(-2000)}`);
      if (await canConnect(this.port)) return;
      await sleep(50);
    }
    throw new Error(`mosquitto did not listen on ${this.port}:\n${this.log.slice(-2000)}`);
  }

  /** Rewrites the ACL file and has mosquitto reload its configuration (SIGHUP). */
  async setAcl(acl: string): Promise<void> {
    writeFileSync(this.aclFile, acl);
    const mark = this.log.length;
    this.proc?.kill("SIGHUP");
    const end = Date.now() + 5000;
    while (Date.now() < end && !/reload/i.test(this.log.slice(mark))) await sleep(20);
    await sleep(100);
  }

  /** Stops and starts again on the same port; with `persistence false` it forgets every session and queued message. */
  async restart(): Promise<void> {
    await this.stop();
    await this.spawnAndWait();
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null) return;
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ port, host: "127.0.0.1" });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
