import { execFileSync } from "node:child_process";
import { accessSync, constants, existsSync, lstatSync, readdirSync, readFileSync, statfsSync, statSync } from "node:fs";
import { connect, createServer } from "node:net";
import { dirname, join } from "node:path";
import mqtt from "mqtt";
import { controlCall } from "../core/control-client";
import { ownershipOf } from "../core/dirs";
import type { Config } from "../config/schema";
import { describeError } from "../core/errors";
import { brokerAuth } from "../mqtt-connection";
import { splitHostPort } from "../core/host-port";
import { secretFilesOf } from "./secrets";
import { CERT_WARN_DAYS, certificateFilesOf, certificateProblem, certificateStatus } from "./certificates";

/** One finding of `gatewarden doctor`: what was checked, what was seen, and how to fix it. */
export interface Check {
  id: string;
  status: "ok" | "warn" | "fail";
  detail: string;
  fix?: string;
}

const ok = (id: string, detail: string): Check => ({ id, status: "ok", detail });
const fail = (id: string, detail: string, fix: string): Check => ({ id, status: "fail", detail, fix });
const warn = (id: string, detail: string, fix: string): Check => ({ id, status: "warn", detail, fix });

/** Entries under `dir` (at most `limit` looked at, symbolic links not followed) that `uid` does not own. */
function notOwnedBy(dir: string, uid: number, limit = 2000): { path: string; uid: number }[] {
  const out: { path: string; uid: number }[] = [];
  const todo = [dir];
  let seen = 0;
  while (todo.length && seen < limit) {
    const d = todo.pop()!;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      if (++seen > limit) break;
      const p = join(d, n);
      try {
        const st = lstatSync(p);
        if (st.uid !== uid) out.push({ path: p, uid: st.uid });
        if (st.isDirectory()) todo.push(p);
      } catch {
        /* gone meanwhile */
      }
    }
  }
  return out;
}

/**
 * The config as the service user would read it: its owner with u+r, its group with g+r, or
 * anyone with o+r (install.sh makes it root:gatewarden 0640).
 */
export function checkConfigReadable(file: string, user: { uid: number; gid: number } | undefined): Check | undefined {
  if (!user) return undefined;
  try {
    const st = statSync(file);
    const m = st.mode & 0o777;
    const readable = (st.uid === user.uid && m & 0o400) || (st.gid === user.gid && m & 0o040) || m & 0o004;
    const owner = ownershipOf(file);
    if (readable) return ok("config_readable", `${file} (${owner}) is readable by the service user`);
    return fail("config_readable", `${file} is ${owner}: the service user (uid ${user.uid} gid ${user.gid}) cannot read it, and the daemon will not start`, `chown root:gatewarden ${file} && chmod 0640 ${file}`);
  } catch (e) {
    return fail("config_readable", `${file}: ${describeError(e)}`, "gatewarden config validate names the problem");
  }
}

/** The service account as the system (or the install root) knows it. */
export function serviceUser(root: string, name: string): { uid: number; gid: number } | undefined {
  try {
    const line = readFileSync(join(root, "etc", "passwd"), "utf8").split("\n").find((l) => l.startsWith(`${name}:`));
    if (!line) return undefined;
    const f = line.split(":");
    // A line without whole numbers for uid and gid names no usable account.
    if (!/^\d+$/.test(f[2] ?? "") || !/^\d+$/.test(f[3] ?? "")) return undefined;
    return { uid: Number(f[2]), gid: Number(f[3]) };
  } catch {
    return undefined;
  }
}

/**
 * Secret files the service user must be able to read: owner-only (0600) and owned by it. The
 * mode is also checked by the config's reference check; ids it already failed are skipped.
 */
export function checkSecrets(c: Config, user: { uid: number } | undefined, failed: ReadonlySet<string>): Check[] {
  return secretFilesOf(c).flatMap(({ key, path }) => {
    const id = `secret:${key}`;
    if (failed.has(id)) return [];
    let st;
    try {
      st = statSync(path);
    } catch (e) {
      return fail(id, `${path} (${key}) cannot be read: ${(e as NodeJS.ErrnoException).code}`, `create it, or correct ${key}`);
    }
    const mode = st.mode & 0o777;
    if (mode & 0o077) return fail(id, `${path} (${key}) has mode 0${mode.toString(8)}: readable or writable by group or others`, `chmod 600 ${path}`);
    if (user && st.uid !== user.uid && st.uid !== 0) return fail(id, `${path} is owned by uid ${st.uid}, not the service user`, `chown gatewarden ${path}`);
    if (user && st.uid === 0) return fail(id, `${path} is owned by root with mode 0${mode.toString(8)}: the service user cannot read it`, `chown gatewarden ${path}`);
    return ok(id, `${path} is 0${mode.toString(8)}`);
  });
}

/**
 * How long each certificate the config names has left: a warning within `posture.cert_warn_days`
 * (default 30), a failure when expired or not yet valid. One that cannot be read is the
 * config's reference check's to name.
 */
export function checkCertificates(c: Config, now = Date.now()): Check[] {
  return certificateStatus(certificateFilesOf(c), now, c.posture?.cert_warn_days ?? CERT_WARN_DAYS).flatMap((s): Check[] => {
    const id = `cert:${s.key}`;
    if (s.state === "unreadable") return [];
    if (s.state === "ok") return [ok(id, `${s.path} is valid until ${s.not_after} (${s.days_left} days)`)];
    const detail = certificateProblem(s)!.text;
    const fix = s.key === "opcua.pki_dir" ? "gatewarden opcua pki renew" : s.state === "not_yet_valid" ? "set the clock right (NTP), or use a certificate valid now" : `issue a new certificate, replace ${s.path} and restart the daemon`;
    return [s.state === "expires_soon" ? warn(id, detail, fix) : fail(id, detail, fix)];
  });
}

export function checkClock(): Check {
  const probes: [string, string[], (out: string) => boolean | undefined][] = [
    ["timedatectl", ["show", "-p", "NTPSynchronized", "--value"], (o) => (o.trim() === "yes" ? true : o.trim() === "no" ? false : undefined)],
    ["chronyc", ["-n", "tracking"], (o) => (/Leap status\s*:\s*Normal/.test(o) ? true : /Leap status/.test(o) ? false : undefined)],
  ];
  for (const [cmd, args, parse] of probes) {
    let out: string;
    try {
      out = execFileSync(cmd, args, { encoding: "utf8", timeout: 3000, stdio: ["ignore", "pipe", "ignore"] });
    } catch {
      continue;
    }
    const synced = parse(out);
    if (synced === true) return ok("clock", `synchronised (${cmd})`);
    if (synced === false) return fail("clock", `not synchronised (${cmd})`, "enable NTP (timedatectl set-ntp true, or configure chrony): event times and certificate checks depend on it");
  }
  if (existsSync("/run/systemd/timesync/synchronized")) return ok("clock", "synchronised (systemd-timesyncd)");
  return warn("clock", "synchronisation state unknown: neither timedatectl nor chronyc answered", "run a time service (systemd-timesyncd or chrony) so this check can see it");
}

export function checkDisk(c: Config): Check {
  const dir = dirname(c.buffer.path);
  try {
    const fs = statfsSync(existsSync(dir) ? dir : dirname(dir));
    const free = fs.bavail * fs.bsize;
    let used = 0;
    for (const s of ["", "-wal", "-shm"]) if (existsSync(c.buffer.path + s)) used += statSync(c.buffer.path + s).size;
    const need = c.buffer.max_bytes - used;
    const mib = (n: number) => `${(n / 1024 ** 2).toFixed(0)} MiB`;
    if (free < need) return fail("disk", `${dir}: ${mib(free)} free, the outbox may grow by ${mib(need)} more (buffer.max_bytes ${mib(c.buffer.max_bytes)})`, `free space, or lower buffer.max_bytes below ${mib(free + used)}`);
    return ok("disk", `${dir}: ${mib(free)} free for an outbox budget of ${mib(c.buffer.max_bytes)}`);
  } catch (e) {
    return fail("disk", `${dir}: ${describeError(e)}`, `create ${dir} (install.sh does), or correct buffer.path`);
  }
}

export function checkDataDir(c: Config, user: { uid: number } | undefined): Check {
  const dir = dirname(c.buffer.path);
  try {
    const st = statSync(dir);
    if (user && st.uid !== user.uid) return fail("state_dir", `${dir} is owned by uid ${st.uid}, not the service user (${user.uid})`, `chown -R gatewarden ${dir}`);
    if (user) {
      // A file a command run as root left there (before it gave its files to the directory's
      // owner): the daemon cannot open its outbox, manifest or state.
      const foreign = notOwnedBy(dir, user.uid);
      if (foreign.length) return fail("state_dir", `${dir}: ${foreign.slice(0, 3).map((f) => `${f.path} (uid ${f.uid})`).join(", ")}${foreign.length > 3 ? ` and ${foreign.length - 3} more` : ""} not owned by the service user (${user.uid}): the daemon may not open them`, `chown -R gatewarden: ${dir}`);
    }
    if (!user) accessSync(dir, constants.W_OK);
    return ok("state_dir", `${dir} is writable by the service`);
  } catch (e) {
    return fail("state_dir", `${dir}: ${(e as NodeJS.ErrnoException).code ?? describeError(e)}`, `create ${dir} writable by the service user (install.sh does)`);
  }
}

/** A real broker connection with the configured TLS material and credentials. */
export async function checkBroker(c: Config): Promise<Check> {
  const u = c.upstream;
  if (!u.url) return warn("broker", "upstream.url is not set: events stay in the outbox", "gatewarden config set upstream.url mqtts://SOC-BROKER:8883");
  let auth;
  try {
    auth = brokerAuth({ ca: u.ca, cert: u.cert, key: u.key, username: u.username, passwordFile: u.password_file }, "upstream");
  } catch (e) {
    return fail("broker", `cannot load the broker TLS material: ${describeError(e)}`, "fix the file the message names");
  }
  const timeout = Math.min(u.connect_timeout_ms, 10_000);
  return new Promise((resolve) => {
    const client = mqtt.connect(u.url!, { ...auth, protocolVersion: u.protocol_version, clientId: `${c.device.id}-doctor`, connectTimeout: timeout, reconnectPeriod: 0, clean: true });
    const done = (r: Check) => {
      clearTimeout(t);
      client.end(true);
      resolve(r);
    };
    const t = setTimeout(() => done(fail("broker", `${u.url}: no CONNACK within ${timeout} ms`, "check the address, the firewall and the broker")), timeout + 500);
    client.once("connect", () => done(ok("broker", `connected to ${u.url} (MQTT ${u.protocol_version}${u.url!.startsWith("mqtts") ? ", TLS" : ", no TLS"})`)));
    client.once("error", (e) => done(fail("broker", `${u.url}: ${describeError(e)}`, "check upstream.ca, upstream.cert and upstream.key against the broker's CA, and the broker's address")));
  });
}

function tcpReach(host: string, port: number, timeoutMs = 3000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const t = setTimeout(() => finish("no answer within " + timeoutMs + " ms"), timeoutMs);
    const finish = (err?: string) => {
      clearTimeout(t);
      s.destroy();
      resolve(err);
    };
    s.once("connect", () => finish());
    s.once("error", (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  });
}

export async function checkUpstreams(c: Config): Promise<Check[]> {
  const out: Check[] = [];
  for (const up of c.modbus?.upstreams ?? []) {
    const id = `modbus_upstream:${up.name}`;
    if (up.type === "rtu") {
      try {
        if (!statSync(up.device).isCharacterDevice()) out.push(fail(id, `${up.device} is not a serial device`, `correct modbus.upstreams ${up.name} device`));
        else {
          accessSync(up.device, constants.R_OK | constants.W_OK);
          out.push(ok(id, `serial port ${up.device} present and accessible`));
        }
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        out.push(fail(id, `serial port ${up.device}: ${code === "ENOENT" ? "not present" : code}`, code === "ENOENT" ? "plug in the adapter, or correct the device path (ls /dev/serial/by-id)" : "add the service user to dialout (install.sh does)"));
      }
      continue;
    }
    const { host, port } = splitHostPort(up.target);
    const err = await tcpReach(host, port);
    out.push(err ? fail(id, `${up.target}: ${err}`, "check the device's address, power and the cabinet network") : ok(id, `${up.target} answers`));
  }
  for (const s of c.opcua?.servers ?? []) {
    const m = /^opc\.tcp:\/\/([^/:]+)(?::(\d+))?/.exec(s.endpoint)!;
    const err = await tcpReach(m[1]!, Number(m[2] ?? 4840));
    out.push(err ? fail(`opcua_server:${s.name}`, `${s.endpoint}: ${err}`, "check the server's address and that it runs") : ok(`opcua_server:${s.name}`, `${s.endpoint} answers`));
  }
  return out;
}

/** Each listener's address can be bound, or is held by the running daemon. */
export async function checkListeners(c: Config): Promise<Check[]> {
  const listeners = c.modbus?.listeners ?? [];
  if (!listeners.length) return [];
  let daemonRunning = false;
  try {
    await controlCall(c.control.socket, "status", {}, 2000);
    daemonRunning = true;
  } catch {
    /* not running */
  }
  const out: Check[] = [];
  for (const l of listeners) {
    const id = `listener:${l.name}`;
    const { host, port } = splitHostPort(l.listen);
    const err = await new Promise<string | undefined>((resolve) => {
      const srv = createServer();
      srv.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      srv.listen(port, host.replace(/^\[(.*)\]$/, "$1"), () => srv.close(() => resolve(undefined)));
    });
    if (!err) out.push(ok(id, `${l.listen} can be bound`));
    else if (err === "EADDRINUSE" && daemonRunning) out.push(ok(id, `${l.listen} is held by the running daemon`));
    else if (err === "EADDRINUSE") out.push(fail(id, `${l.listen} is in use by another program`, `find it with: ss -ltnp 'sport = :${port}'`));
    else if (err === "EACCES") out.push(fail(id, `${l.listen}: port ${port} needs CAP_NET_BIND_SERVICE`, "run under the gatewarden.service unit (it grants it)"));
    else out.push(fail(id, `${l.listen}: ${err}`, "correct the listen address: it must be one of this gateway's"));
  }
  return out;
}
