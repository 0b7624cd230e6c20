import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSocKeys } from "../../agent/keys/identity";
import { ROOT } from "../helpers/cli";
import { tempDir, until } from "../helpers/fixture";
import { Mosquitto, MOSQUITTO, freePort } from "../helpers/mosquitto";
import { havePeer } from "../helpers/peers";
import { findOpenssl, makePki } from "../helpers/tls";

const SOCAT = ["/usr/bin/socat", "/usr/local/bin/socat"].find((p) => existsSync(p));
const peers = havePeer(MOSQUITTO ?? "/usr/sbin/mosquitto") && havePeer(SOCAT ?? "/usr/bin/socat") && havePeer(findOpenssl() ?? "/usr/bin/openssl") && havePeer("/usr/sbin/useradd");

interface DoctorOut {
  ok: boolean;
  checks: { id: string; status: string; detail: string; fix?: string }[];
}

/**
 * The release tarball as a fleet operator uses it: `npm run release`, unpack, `install.sh --root`
 * into a scratch root, then `gatewarden doctor` there against a real Mosquitto (TLS), a simulator
 * and a serial port (a socat pty).
 */
describe.skipIf(!peers)("release package, install.sh and doctor", () => {
  const t = tempDir("gw-release-");
  const root = join(t.dir, "root");
  const procs: ChildProcess[] = [];
  let broker: Mosquitto;
  let cli: (args: string[]) => { code: number; out: string };
  let conf: string;
  let uid = 0;
  let bin = "";

  beforeAll(async () => {
    execFileSync(process.execPath, [join(ROOT, "build", "release.mjs"), join(t.dir, "out")], { cwd: ROOT, stdio: "pipe" });
    const tarball = execFileSync("sh", ["-c", `ls ${join(t.dir, "out")}/gatewarden-*-linux-*.tar.gz`], { encoding: "utf8" }).trim();
    mkdirSync(join(t.dir, "unpacked"));
    execFileSync("tar", ["-C", join(t.dir, "unpacked"), "-xzf", tarball]);
    const rel = execFileSync("sh", ["-c", `ls -d ${join(t.dir, "unpacked")}/gatewarden-*`], { encoding: "utf8" }).trim();
    const install = (extra: string[] = []) => execFileSync(join(rel, "install.sh"), ["--root", root, "--device-id", "cab-17", "--node", process.execPath, ...extra], { encoding: "utf8" });
    install();
    expect(install()).toMatch(/already installed[\s\S]*kept the existing config/); // idempotent
    bin = join(root, "opt", "gatewarden", "releases", "current", "dist", "gatewarden.cjs");
    conf = join(root, "etc", "gatewarden", "gatewarden.yaml");
    cli = (args) => {
      try {
        return { code: 0, out: execFileSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 60_000 }) };
      } catch (e) {
        const x = e as { status: number; stdout: string };
        return { code: x.status, out: x.stdout };
      }
    };
    uid = Number(readFileSync(join(root, "etc", "passwd"), "utf8").split("\n").find((l) => l.startsWith("gatewarden:"))!.split(":")[2]);

    // The SOC's broker (mTLS) and sealing key, given to the gateway as an operator would.
    mkdirSync(join(t.dir, "pki"));
    const pki = makePki(join(t.dir, "pki"), ["cab-17"]);
    broker = new Mosquitto({ dir: t.dir, tls: { ca: pki.ca, cert: pki.server.cert, key: pki.server.key } });
    await broker.start();
    const etc = join(root, "etc", "gatewarden");
    mkdirSync(join(etc, "tls"));
    copyFileSync(pki.ca, join(etc, "tls", "ca.pem"));
    copyFileSync(pki.clients["cab-17"]!.cert, join(etc, "tls", "gw.pem"));
    copyFileSync(pki.clients["cab-17"]!.key, join(etc, "tls", "gw.key"));
    chmodSync(join(etc, "tls", "gw.key"), 0o600);
    chownSync(join(etc, "tls", "gw.key"), uid, uid);
    generateSocKeys(join(t.dir, "soc.key"), join(etc, "soc.pub"));

    // A water simulator from the installed package, and a serial port.
    const sim = spawn(process.execPath, [bin, "sim", "water", "--listen", "127.0.0.1:0", "--json"], { stdio: ["ignore", "pipe", "ignore"] });
    procs.push(sim);
    let simOut = "";
    sim.stdout!.on("data", (d: Buffer) => (simOut += d.toString()));
    await until(() => simOut.includes("\n"), 30_000, "the simulator");
    const simAddr = (JSON.parse(simOut.split("\n")[0]!) as { listen: string }).listen;
    const tty = join(t.dir, "ttyGW0");
    const socat = spawn(SOCAT!, [`pty,raw,echo=0,link=${tty}`, `pty,raw,echo=0,link=${tty}-peer`], { stdio: "ignore" });
    procs.push(socat);
    await until(() => existsSync(tty), 10_000, "the socat pty");

    for (const [k, v] of [
      ["upstream.url", broker.url],
      ["upstream.ca", "tls/ca.pem"],
      ["upstream.cert", "tls/gw.pem"],
      ["upstream.key", "tls/gw.key"],
      ["upstream.soc_public_key", "soc.pub"],
    ]) expect(cli(["config", "set", k!, v!, "--config", conf]).code).toBe(0);
    const listen = await freePort();
    appendFileSync(
      conf,
      [
        "modbus:",
        "  listeners:",
        `    - { name: scada, type: tcp, listen: "127.0.0.1:${listen}" }`,
        "  upstreams:",
        `    - { name: plc, type: tcp, target: "${simAddr}" }`,
        `    - { name: bus, type: rtu, device: ${tty}, baud: 19200 }`,
        "  routes:",
        "    - { unit: 1, upstream: plc }",
        "    - { unit: 2, upstream: bus }",
        "",
      ].join("\n"),
    );
  }, 240_000);

  afterAll(async () => {
    for (const p of procs) p.kill("SIGTERM");
    await broker?.stop();
    t.cleanup();
  });

  it("installs the layout with its modes, and the unit with this node", () => {
    expect(readlinkSync(join(root, "opt", "gatewarden", "releases", "current"))).toMatch(/^\d+\.\d+\.\d+/);
    expect(statSync(join(root, "etc", "gatewarden", "keys", "device.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(root, "etc", "gatewarden", "keys", "device.key")).uid).toBe(uid);
    expect(statSync(join(root, "var", "lib", "gatewarden")).mode & 0o777).toBe(0o700);
    expect(lstatSync(join(root, "etc", "gatewarden", "data")).isSymbolicLink()).toBe(true);
    expect(readFileSync(join(root, "etc", "systemd", "system", "gatewarden.service"), "utf8")).toContain(`ExecStart=${process.execPath} --max-semi-space-size=1 --optimize-for-size /opt/gatewarden/releases/current/dist/gatewarden.cjs run`);
    expect(readFileSync(conf, "utf8").split("\n")[0]).toMatch(/yaml-language-server: \$schema=/);
  });

  it("doctor passes every check against the broker, the simulator and the serial port", () => {
    const r = cli(["doctor", "--config", conf, "--root", root, "--json"]);
    const d = JSON.parse(r.out) as DoctorOut;
    const notOk = d.checks.filter((c) => c.status !== "ok");
    // The clock's state is unknowable in a container without a time service: a warning, said as such.
    expect(notOk.map((c) => c.id)).toEqual(notOk.some((c) => c.id === "clock") ? ["clock"] : []);
    expect(r.code).toBe(0);
    expect(d.checks.map((c) => c.id)).toEqual(expect.arrayContaining(["config", "service_user", "secret:device.key", "secret:upstream.key", "state_dir", "disk", "broker", "modbus_upstream:plc", "modbus_upstream:bus", "listener:scada"]));
  });

  it("what root's commands write stays usable by the service user: config set keeps root:gatewarden 0640, integrity accept leaves the state its own, run as root is refused", () => {
    // beforeAll edited the config as root (sudo gatewarden config set): it was root:root before.
    const gid = statSync(join(root, "etc", "gatewarden")).gid;
    const c = statSync(conf);
    expect([c.uid, c.gid, c.mode & 0o777]).toEqual([0, gid, 0o640]);
    // integrity accept with no daemon: the manifest, and the outbox its audit event went into, are
    // made by root in the service user's state directory.
    const state = join(root, "var", "lib", "gatewarden");
    expect(cli(["config", "set", "integrity.interval_ms", "300000", "--config", conf]).code).toBe(0);
    const r = cli(["integrity", "accept", "--config", conf, "--json"]);
    expect(r.code, r.out).toBe(0);
    const files = readdirSync(state);
    expect(files).toEqual(expect.arrayContaining(["integrity.json", "outbox.db", "outbox.db.head", "outbox.db.lock"]));
    for (const f of files) expect([f, statSync(join(state, f)).uid], f).toEqual([f, uid]);
    // sudo gatewarden run: refused before it makes anything root's in the service user's state.
    const before = readdirSync(state).sort();
    const run = spawnSync(process.execPath, [bin, "run", "--config", conf], { encoding: "utf8", timeout: 60_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^error\\[WRONG_USER\\]: the daemon would run as root, but its state directory \\S+ \\(buffer.path\\) belongs to uid ${uid}: files made now would be root's`));
    expect(readdirSync(state).sort()).toEqual(before);
    const doctor = (): DoctorOut => JSON.parse(cli(["doctor", "--config", conf, "--root", root, "--json"]).out) as DoctorOut;
    expect(doctor().checks.filter((x) => ["config_readable", "state_dir"].includes(x.id)).map((x) => x.status)).toEqual(["ok", "ok"]);
    // A file root left there, and a config the service cannot read, are each a failing check with its fix.
    chownSync(join(state, "integrity.json"), 0, 0);
    chownSync(conf, 0, 0);
    try {
      const d = doctor().checks;
      const data = join(root, "etc", "gatewarden", "data"); // buffer.path's directory, as the config names it
      expect(d.find((x) => x.id === "state_dir")).toMatchObject({ status: "fail", detail: `${data}: ${join(data, "integrity.json")} (uid 0) not owned by the service user (${uid}): the daemon may not open them`, fix: `chown -R gatewarden: ${data}` });
      expect(d.find((x) => x.id === "config_readable")).toMatchObject({ status: "fail", detail: `${conf} is uid 0 gid 0 mode 0640: the service user (uid ${uid} gid ${gid}) cannot read it, and the daemon will not start` });
    } finally {
      chownSync(join(state, "integrity.json"), uid, statSync(state).gid);
      chownSync(conf, 0, gid);
    }
  });

  it("with a loose key file, a stopped broker and a missing serial port, exactly those checks fail", async () => {
    chmodSync(join(root, "etc", "gatewarden", "tls", "gw.key"), 0o644);
    await broker.stop();
    procs[1]!.kill("SIGTERM");
    await until(() => !existsSync(join(t.dir, "ttyGW0")), 10_000, "the pty to go");
    const r = cli(["doctor", "--config", conf, "--root", root, "--json"]);
    expect(r.code).toBe(1);
    const d = JSON.parse(r.out) as DoctorOut;
    expect(d.checks.filter((c) => c.status === "fail").map((c) => c.id).sort()).toEqual(["broker", "modbus_upstream:bus", "secret:upstream.key"]);
    expect(d.checks.find((c) => c.id === "secret:upstream.key")!.fix).toMatch(/^chmod 600 /);
  });

  it("an upgrade whose release refuses the existing config stops and names the key", () => {
    const rel = execFileSync("sh", ["-c", `ls -d ${join(t.dir, "unpacked")}/gatewarden-*`], { encoding: "utf8" }).trim();
    const before = readFileSync(conf, "utf8");
    appendFileSync(conf, "heartbeat_interval: 5\n");
    let err = "";
    try {
      execFileSync(join(rel, "install.sh"), ["--root", root, "--node", process.execPath], { encoding: "utf8", stdio: "pipe" });
    } catch (e) {
      err = (e as { stderr: string }).stderr;
    }
    expect(err).toMatch(/heartbeat_interval/);
    expect(err).toMatch(/does not validate under release/);
    writeFileSync(conf, before);
  });

  it("uninstall keeps keys and outbox; --purge removes them", () => {
    const rel = execFileSync("sh", ["-c", `ls -d ${join(t.dir, "unpacked")}/gatewarden-*`], { encoding: "utf8" }).trim();
    execFileSync(join(rel, "install.sh"), ["--root", root, "--uninstall"]);
    expect(existsSync(join(root, "opt", "gatewarden"))).toBe(false);
    expect(existsSync(join(root, "etc", "gatewarden", "keys", "device.key"))).toBe(true);
    execFileSync(join(rel, "install.sh"), ["--root", root, "--uninstall", "--purge"]);
    expect(existsSync(join(root, "etc", "gatewarden"))).toBe(false);
  });
});
