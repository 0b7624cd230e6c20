import { afterAll, describe, expect, it } from "vitest";
import { createServer, type AddressInfo, type Server } from "node:net";
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { BIN, gw, gwAsync } from "../helpers/cli";
import { makeSite, tempDir } from "../helpers/fixture";
import { havePeer } from "../helpers/peers";
import { makePki } from "../helpers/tls";
import { createServer as createTlsServer } from "node:tls";

/** Inputs and environments that are not what a command expects: a named code, never INTERNAL. */
describe("malformed inputs and peers (built bundle)", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  let n = 0;
  const site = () => makeSite(join(t.dir, `s${n}`), { device: `gw-${n++}` });
  /** Commands run as uid 65534 need root: a skip locally, a failure in CI. */
  const canRunAsOtherUser = (): boolean => {
    if (process.getuid?.() === 0) return true;
    if (process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error("running a command as another user needs root (GATEWARDEN_REQUIRE_PEERS=1)");
    console.warn("skipped: not root");
    return false;
  };
  const asNobody = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", uid: 65534, gid: 65534, timeout: 30_000 });
  const errorOf = (r: { stdout: string }) => (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;

  /** A Unix socket server that answers every connection with `reply` (another service's socket). */
  async function foreignSocket(path: string, reply: string): Promise<Server> {
    const srv = createServer((c) => {
      c.on("error", () => {});
      c.once("data", () => c.write(reply));
    });
    await new Promise<void>((r) => srv.listen(path, r));
    return srv;
  }

  it("a control socket that answers something else is CONTROL_UNAVAILABLE naming the socket, for every client command", async () => {
    const s = site();
    for (const [i, reply] of ["HTTP/1.1 400 Bad Request\r\n\r\n\n", '{"id":1,"ok":false}\n', "[1,2]\n", "null\n", '{"hello":"world"}\n'].entries()) {
      const path = join(s.gwDir, `foreign${i}.sock`);
      const srv = await foreignSocket(path, reply);
      try {
        expect(gw(["config", "set", "control.socket", path, "--config", s.cfgFile]).code).toBe(0);
        const every = [["status"], ["reload"], ["events", "tail"], ["keys", "rotate"], ["posture"], ["maintenance", "list"], ["window", "list"], ["modbus", "status"], ["opcua", "status"]];
        for (const args of i === 0 ? every : [["status"]]) {
          const r = await gwAsync([...args, "--config", s.cfgFile, "--json"]);
          const what = `${args.join(" ")} <- ${JSON.stringify(reply)}`;
          expect(r.code, what).toBe(1);
          expect(r.stderr, what).not.toMatch(/SyntaxError|TypeError|INTERNAL|    at /);
          expect(errorOf(r), what).toMatchObject({ code: "CONTROL_UNAVAILABLE" });
          expect(errorOf(r).message, what).toContain(`the socket ${path} answered something that is not the daemon's control protocol`);
        }
      } finally {
        await new Promise((r) => srv.close(r));
      }
    }
  }, 120_000);

  it("a malformed trust store is TRUST_INVALID naming the file, in trust list, remove, verify and receive", () => {
    const s = site();
    const device = `gw-${n - 1}`;
    const out = join(s.socDir, "empty.jsonl");
    writeFileSync(out, "");
    const cases: [string, (dir: string) => void, string][] = [
      ["trusted/ is a file", (d) => (rmSync(join(d, "trusted"), { recursive: true }), writeFileSync(join(d, "trusted"), "")), "trusted key directory DIR/trusted cannot be read: it is a file, not a directory (ENOTDIR)"],
      ["a device file is a directory", (d) => (rmSync(join(d, "trusted", `${device}.json`)), mkdirSync(join(d, "trusted", `${device}.json`))), `trust file DIR/trusted/${device}.json cannot be read: it is a directory (EISDIR)`],
      ["a device file is null", (d) => writeFileSync(join(d, "trusted", `${device}.json`), "null\n"), `DIR/trusted/${device}.json is not a JSON object`],
      ["a key is null", (d) => writeFileSync(join(d, "trusted", `${device}.json`), JSON.stringify({ device, alg: "ed25519", keys: [null] })), `DIR/trusted/${device}.json: "keys"[0] is not an object`],
    ];
    for (const [i, [what, spoil, message]] of cases.entries()) {
      const dir = join(t.dir, `trust${i}`);
      cpSync(s.socDir, dir, { recursive: true });
      spoil(dir);
      for (const args of [["soc", "trust", "list"], ["soc", "trust", "remove", device, "--until-boot", "3"], ["soc", "verify", out], ["soc", "receive", "--broker", "mqtt://127.0.0.1:1", "--out", join(dir, "out.jsonl")]]) {
        const r = gw([...args, "--dir", dir]);
        expect(r.code, `${what}: ${args.join(" ")}`).toBe(1);
        const line = r.stderr.split("\n")[0]!;
        // remove reads only the device's own file: with no trusted/ directory, the device is not trusted there
        const expected = i === 0 && args[2] === "remove" ? `device ${device} is not trusted in ${join(dir, "trusted")}` : message.replace("DIR", dir);
        expect(line.startsWith(`error[TRUST_INVALID]: ${expected}`), `${what}: ${args.join(" ")}: ${line}`).toBe(true);
      }
    }
  });

  it("soc trust add of a file holding null is TRUST_INVALID naming it", () => {
    const s = site();
    const f = join(s.socDir, "null.trust.json");
    writeFileSync(f, "null\n");
    const r = gw(["soc", "trust", "add", f, "--dir", s.socDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error[TRUST_INVALID]: ${f} is not a JSON object (expected the output of \`gatewarden keys export-public\`)\n`);
  });

  it("soc receive refuses a broker, TLS file, password file, trust dir or topic it cannot use, naming the option, before starting", () => {
    const s = site();
    const notCert = join(s.socDir, "soc.pub");
    const out = join(s.socDir, "receive-out.jsonl");
    const cases: [string[], string][] = [
      [["--broker", "notaurl"], 'error[USAGE]: --broker "notaurl" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]'],
      [["--broker", "mqtt://[::1"], 'error[USAGE]: --broker "mqtt://[::1" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], with a valid host and a port from 1 to 65535'],
      [["--broker", "mqtt://h:99999"], 'error[USAGE]: --broker "mqtt://h:99999" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], with a valid host and a port from 1 to 65535'],
      [["--broker", "http://127.0.0.1:1883"], 'error[USAGE]: --broker "http://127.0.0.1:1883" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]'],
      [["--broker", "tcp://127.0.0.1:1883"], 'error[USAGE]: --broker "tcp://127.0.0.1:1883" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]'],
      [["--broker", ""], "error[USAGE]: --broker was given an empty value"],
      [["--password-file", notCert], "error[USAGE]: --password-file needs --username: a broker takes a password only with a user name"],
      [["--ca", join(s.socDir, "missing.pem")], `error[TLS_SETUP]: --ca ${join(s.socDir, "missing.pem")} cannot be read (ENOENT)`],
      [["--ca", s.socDir], `error[TLS_SETUP]: --ca ${s.socDir} cannot be read (EISDIR)`],
      [["--ca", notCert], `error[TLS_SETUP]: --ca ${notCert} is not a certificate (PEM or DER): `],
      [["--cert", join(s.socDir, "missing.pem")], `error[TLS_SETUP]: --cert ${join(s.socDir, "missing.pem")} cannot be read (ENOENT)`],
      [["--cert", notCert], `error[TLS_SETUP]: --cert ${notCert} is not a certificate (PEM or DER): `],
      [["--trust-dir", join(s.socDir, "nowhere")], `error[PATH_UNUSABLE]: --trust-dir ${join(s.socDir, "nowhere")} cannot be used: it does not exist (ENOENT)`],
      [["--trust-dir", notCert], `error[PATH_UNUSABLE]: --trust-dir ${notCert} cannot be used: it is not a directory`],
      [["--topic", "#/bad"], 'error[USAGE]: --topic "#/bad" is not an MQTT topic filter: "#" must be the whole last level (level 1 is "#")'],
      [["--topic", "a/b+"], 'error[USAGE]: --topic "a/b+" is not an MQTT topic filter: "+" must be a whole level (level 2 is "b+")'],
    ];
    for (const [args, message] of cases) {
      const r = gw(["soc", "receive", "--dir", s.socDir, "--out", out, "--broker", "mqtt://127.0.0.1:1", ...args]);
      expect(r.code, args.join(" ")).not.toBe(0);
      expect(r.stderr.split("\n")[0]!.startsWith(message), `${args.join(" ")}: ${r.stderr}`).toBe(true);
    }
  }, 60_000);

  it("soc command refuses what it cannot send before signing, leaves a bad counter file as it was, and names broker failures", async () => {
    const s = site();
    expect(gw(["soc", "command-key", "init", "--dir", s.socDir]).code).toBe(0);
    // A port nothing listens on: bound, then closed.
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as AddressInfo).port;
    await new Promise((r) => srv.close(r));
    const broker = `mqtt://127.0.0.1:${port}`;
    const policy = join(s.socDir, "policy.yaml");
    writeFileSync(policy, "roles: 5\n");
    const counters = join(s.socDir, "command-counters.json");
    const send = (...args: string[]) => gw(["soc", "command", "gw-0", ...args, "--dir", s.socDir]);
    const cases: [string[], string][] = [
      [["posture", "--broker", broker], `error[BROKER_UNREACHABLE]: --broker ${broker}: nothing listens there (ECONNREFUSED), while connecting; the command was not sent`],
      [["posture", "--broker", "mqtt://host.invalid:1883"], "error[BROKER_UNREACHABLE]: --broker mqtt://host.invalid:1883: the host name does not resolve (ENOTFOUND), while connecting; the command was not sent"],
      [["posture", "--broker", "notaurl"], 'error[USAGE]: --broker "notaurl" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]'],
      [["posture", "--broker", broker, "--mqtt-version", "7"], "error[USAGE]: --mqtt-version must be 4 or 5, not 7"],
      [["posture", "--broker", broker, "--ca", policy], `error[TLS_SETUP]: --ca ${policy} is not a certificate (PEM or DER): `],
      [["posture", "--broker", broker, "--topic-prefix", "#"], `error[USAGE]: --topic-prefix "#" must be a topic prefix with no wildcards or spaces (the gateways' upstream.topic_prefix)`],
      [["posture", "--broker", broker, "--topic-prefix", "a/+"], `error[USAGE]: --topic-prefix "a/+" must be a topic prefix with no wildcards or spaces (the gateways' upstream.topic_prefix)`],
      [["proxy-mode", "banana", "--print"], 'error[USAGE]: proxy-mode takes one of normal, read-only, isolate, not "banana"'],
      [["push-policy", policy, "--print"], `error[POLICY_INVALID]: ${policy}:1: roles: `],
    ];
    for (const [args, message] of cases) {
      const r = send(...args);
      expect(r.code, args.join(" ")).not.toBe(0);
      expect(r.stdout, args.join(" ")).toBe("");
      expect(r.stderr.split("\n")[0]!.startsWith(message), `${args.join(" ")}: ${r.stderr}`).toBe(true);
    }
    const bad: [string, string][] = [
      ["garbage", `error[INPUT_INVALID]: command counter file ${counters} is not JSON`],
      ["null\n", `error[INPUT_INVALID]: command counter file ${counters} is not a JSON object`],
      ['{"gw-0":"abc"}\n', `error[INPUT_INVALID]: command counter file ${counters}: the counter of "gw-0" is "abc", not a whole number`],
    ];
    for (const [text, message] of bad) {
      writeFileSync(counters, text);
      const r = send("posture", "--print");
      expect(r.code, text).toBe(1);
      expect(r.stdout, text).toBe("");
      expect(r.stderr.split("\n")[0]!.startsWith(message), `${text}: ${r.stderr}`).toBe(true);
      expect(readFileSync(counters, "utf8"), text).toBe(text);
    }
    rmSync(counters);
    mkdirSync(counters);
    const r = send("posture", "--print");
    expect(r.stderr).toBe(`error[PATH_UNUSABLE]: command counter file ${counters} cannot be used: it is a directory (EISDIR)\n`);
  }, 60_000);

  it("outbox check on another program's SQLite database is OUTBOX_OPEN naming the file, which it leaves as it was (no tables added, journal mode unchanged)", () => {
    const s = site();
    // A table of the outbox's name without its columns; and none of the outbox's tables (another
    // program's, or the receiver's), to which the outbox's tables used to be added.
    const cases: [string, string, string, string[]][] = [
      ["other.db", "CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT)", "its table events has no column boot", ["events"]],
      ["users.db", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); CREATE TABLE roles (id INTEGER PRIMARY KEY)", "it has tables no outbox has: roles, users", ["roles", "users"]],
    ];
    for (const [name, sql, why, tables] of cases) {
      const foreign = join(s.gwDir, name);
      const db = new Database(foreign);
      db.exec(sql);
      db.close();
      expect(gw(["config", "set", "buffer.path", foreign, "--config", s.cfgFile]).code).toBe(0);
      const r = gw(["outbox", "check", "--config", s.cfgFile]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`error[OUTBOX_OPEN]: cannot open the outbox ${foreign}: it is a SQLite database but not a Gatewarden outbox (${why}); point buffer.path at the outbox, or at a new file\n`);
      const after = new Database(foreign, { readonly: true });
      expect(after.prepare("SELECT name FROM sqlite_master ORDER BY name").pluck().all()).toEqual(tables);
      // Nothing else in it changed either: it was refused before the outbox's WAL mode was set.
      expect(after.pragma("journal_mode", { simple: true })).toBe("delete");
      after.close();
      expect(existsSync(`${foreign}-wal`)).toBe(false);
    }
  });

  it("config set as a user who cannot keep the config's owner changes nothing and says so (PATH_UNUSABLE); as root it keeps owner, group and mode", () => {
    if (!canRunAsOtherUser()) return;
    const s = site();
    const dir = join(s.gwDir, "shared");
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    for (const d of [t.dir, dirname(s.gwDir), s.gwDir]) chmodSync(d, 0o755); // the other user reaches the file
    const cfg = join(dir, "gatewarden.yaml");
    cpSync(s.cfgFile, cfg);
    chownSync(cfg, 0, 65534);
    chmodSync(cfg, 0o644);
    const before = readFileSync(cfg, "utf8");
    const r = asNobody(["config", "set", "buffer.max_bytes", "20000000", "--config", cfg]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`error[PATH_UNUSABLE]: file ${cfg} cannot be used: it belongs to uid 0 gid 65534, and a replacement written by uid 65534 could not keep that (EPERM); nothing was changed: run this as the file's owner or as root\n`);
    expect(readFileSync(cfg, "utf8")).toBe(before);
    expect(readdirSync(dir)).toEqual(["gatewarden.yaml"]);
    // Root (sudo) edits it: it stays root:65534 0644, readable by the group's daemon.
    expect(gw(["config", "set", "buffer.max_bytes", "20000000", "--config", cfg]).code).toBe(0);
    const st = statSync(cfg);
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 65534, 0o644]);
    expect(readFileSync(cfg, "utf8")).toContain("20000000");
  });

  it("a config this user cannot read is CONFIG_UNREADABLE naming its owner and the fix, not 'not found, run init'; a directory is named as one", () => {
    const s = site();
    const dir = s.gwDir.replace(/\/[^/]+$/, "");
    const r0 = gw(["config", "validate", "--config", dir]);
    expect(r0.stderr).toBe(`error[CONFIG_NOT_FOUND]: config ${dir} is a directory; pass --config FILE naming the config file in it\n`);
    if (!canRunAsOtherUser()) return;
    for (const d of [t.dir, dirname(s.gwDir), s.gwDir]) chmodSync(d, 0o755);
    chownSync(s.cfgFile, 0, 0);
    chmodSync(s.cfgFile, 0o640);
    for (const args of [["config", "validate"], ["run"], ["doctor"]]) {
      const r = asNobody([...args, "--config", s.cfgFile]);
      expect(r.status, args.join(" ")).toBe(1);
      const line = `config ${s.cfgFile} cannot be read by uid 65534 (EACCES): it is uid 0 gid 0 mode 0640; run as root or as a member of its group (the daemon's user must be one: chown root:gatewarden ${s.cfgFile} && chmod 0640 ${s.cfgFile})`;
      expect(r.stderr + r.stdout, args.join(" ")).toContain(args[0] === "doctor" ? `CONFIG_UNREADABLE: ${line}` : `error[CONFIG_UNREADABLE]: ${line}\n`);
    }
  });

  it("an integrity manifest this user may not read is PATH_UNUSABLE naming its owner and the chown, not 'not readable JSON, accept again'", () => {
    if (!canRunAsOtherUser()) return;
    const s = site();
    const manifest = join(s.gwDir, "integrity.json");
    for (const [k, v] of [["integrity.interval_ms", "300000"], ["integrity.manifest_path", manifest]]) expect(gw(["config", "set", k!, v!, "--config", s.cfgFile]).code).toBe(0);
    expect(gw(["integrity", "accept", "--config", s.cfgFile]).code).toBe(0);
    expect(statSync(manifest).mode & 0o777).toBe(0o600);
    for (const d of [t.dir, dirname(s.gwDir), s.gwDir]) chmodSync(d, 0o755);
    chmodSync(s.cfgFile, 0o644);
    const r = asNobody(["integrity", "check", "--config", s.cfgFile]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`error[PATH_UNUSABLE]: integrity manifest ${manifest} cannot be used: uid 65534 may not read it (it is uid 0 gid 0 mode 0600): chown it to the daemon's user (chown gatewarden: ${manifest})\n`);
  });

  it("soc trust add and remove name a receiver.db they cannot read the last boot from", () => {
    const s = site();
    const device = `gw-${n - 1}`;
    const trustFile = join(s.socDir, "device.trust.json");
    expect(gw(["keys", "export-public", "--config", s.cfgFile, "--out", trustFile]).code).toBe(0);
    const db = join(s.socDir, "receiver.db");
    const cases: [string, () => void, string][] = [
      ["garbage", () => writeFileSync(db, "garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage\n"), "it is not a SQLite database (SQLITE_NOTADB)"],
      ["a directory", () => (rmSync(db, { force: true }), mkdirSync(db)), "it is a directory"],
      [
        "another schema",
        () => {
          rmSync(db, { recursive: true, force: true });
          const d = new Database(db);
          d.exec("CREATE TABLE devices (device TEXT, x INTEGER)");
          d.close();
        },
        "it is a SQLite database but not a Gatewarden receiver's state (its table devices has no device and last_boot columns)",
      ],
    ];
    for (const [what, spoil, why] of cases) {
      spoil();
      for (const args of [["add", trustFile, "--replace"], ["remove", device]]) {
        const r = gw(["soc", "trust", ...args, "--dir", s.socDir]);
        expect(r.code, `${what}: ${args[0]}`).toBe(1);
        expect(r.stderr, `${what}: ${args[0]}`).toBe(`error[PATH_UNUSABLE]: SOC receiver state (in --dir) ${db} cannot be used: ${why}\n`);
      }
    }
  });

  it("soc trust list, remove and verify refuse a --dir that is missing, a file or not a SOC directory (not \"No trusted devices.\")", () => {
    const s = site();
    const file = join(s.socDir, "soc.pub");
    const missing = join(t.dir, "no-such-dir");
    const notSoc = join(t.dir, "not-soc");
    mkdirSync(notSoc);
    const empty = join(s.socDir, "empty-out.jsonl");
    writeFileSync(empty, "");
    const notSocWhy = "it holds neither trusted/ nor soc.key, so it is not a SOC state directory (`gatewarden soc keys init --dir DIR` makes one)";
    const cases: [string, string[][], string][] = [
      [missing, [["trust", "list"], ["trust", "remove", "gw-x"], ["verify", empty]], "it does not exist (ENOENT)"],
      [file, [["trust", "list"], ["trust", "remove", "gw-x"], ["verify", empty]], "it is not a directory"],
      [notSoc, [["trust", "list"], ["trust", "remove", "gw-x"]], notSocWhy],
    ];
    for (const [dir, commands, why] of cases) {
      for (const args of commands) {
        const r = gw(["soc", ...args, "--dir", dir]);
        expect(r.code, `${args.join(" ")} --dir ${dir}`).toBe(1);
        expect(r.stdout, `${args.join(" ")} --dir ${dir}`).toBe("");
        expect(r.stderr, `${args.join(" ")} --dir ${dir}`).toBe(`error[PATH_UNUSABLE]: --dir ${dir} cannot be used: ${why}\n`);
      }
    }
  });

  it.skipIf(!havePeer("/usr/bin/openssl"))("soc command names a failed TLS handshake with the broker's listener as BROKER_UNREACHABLE", async () => {
    const s = site();
    expect(gw(["soc", "command-key", "init", "--dir", s.socDir]).code).toBe(0);
    const serverDir = join(s.gwDir, "server-pki");
    const otherDir = join(s.gwDir, "other-pki");
    mkdirSync(serverDir);
    mkdirSync(otherDir);
    const server = makePki(serverDir, []);
    const other = makePki(otherDir, []);
    // A TLS listener whose certificate the client's --ca did not issue.
    const srv = createTlsServer({ cert: readFileSync(server.server.cert), key: readFileSync(server.server.key) }, (c) => c.on("error", () => {}));
    srv.on("tlsClientError", () => {});
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    try {
      const broker = `mqtts://127.0.0.1:${(srv.address() as AddressInfo).port}`;
      const r = await gwAsync(["soc", "command", "gw-0", "posture", "--dir", s.socDir, "--broker", broker, "--ca", other.ca]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^error\\[BROKER_UNREACHABLE\\]: --broker ${broker.replace(/[.]/g, "\\.")}: the TLS handshake failed: .* \\(check --ca, --cert and --key\\), while connecting; the command was not sent\\n$`));
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });
});
