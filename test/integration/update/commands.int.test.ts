import { generateKeyPairSync } from "node:crypto";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlCall } from "../../../agent/core/control-client";
import { loadEd25519PrivateKey } from "../../../agent/core/keys";
import { newCommand, signCommand, type Command } from "../../../firmware-hooks/commands";
import { SimDevice } from "../../../agent/demo/sim-server";
import { BIN } from "../../helpers/cli";
import { Daemon } from "../../helpers/daemon";
import { until } from "../../helpers/fixture";
import { RawClient } from "../modbus/_harness";
import { freePort } from "../modbus/_peers";
import { engineerModbusYaml } from "../modbus/_daemon-site";
import { runAsync } from "./_rauc";
import { updateSite } from "./_site";

type CmdLine = { class: string; ocsf: { message: string; unmapped?: { command?: { outcome: string; reason?: string; action?: string } } } };

const WRITE = "0600640640"; // FC 6: holding 100 := 1600
const READ = "0300000001"; // FC 3: holding 0
const READ_50 = "0300320001"; // FC 3: holding 50

/**
 * Signed SOC commands end to end: `gatewarden soc command` publishes through the broker to the
 * device's command topic, the daemon admits or refuses each, and the Modbus proxy in front of
 * a simulated PLC shows the effect; every outcome is a signed event at the SOC receiver.
 */
describe("signed SOC commands", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let s: Awaited<ReturnType<typeof updateSite>>;
  let daemon: Daemon;
  let port: number;
  let socket: string;
  let pub: mqtt.MqttClient;
  const device = "gw-test-1";
  const topic = `gatewarden/v1/${device}/commands`;

  beforeAll(async () => {
    s = await updateSite(cleanups);
    const plc = new SimDevice({ record: true });
    const plcPort = await plc.listen(0);
    cleanups.push(() => plc.close());
    port = await freePort();
    const k = await runAsync(process.execPath, [BIN, "soc", "command-key", "init", "--dir", s.site.socDir], process.env);
    expect(k.status, k.stderr).toBe(0);
    appendFileSync(
      s.site.cfgFile,
      `commands:
  soc_command_key: ${join(s.site.socDir, "command.pub")}
`,
    );
    appendFileSync(s.site.cfgFile, engineerModbusYaml(port, plcPort));
    socket = join(s.site.gwDir, "data", "gatewarden.sock");
    pub = await mqtt.connectAsync(s.broker.url, { protocolVersion: 4, clean: true, reconnectPeriod: 0 });
    cleanups.push(() => pub.endAsync());
    // A retained command waits on the broker before the gateway subscribes: refused when it arrives.
    await pub.publishAsync(topic, sign(cmd({ action: "proxy_mode", args: { mode: "isolate" }, counter: 5 })), { qos: 1, retain: true });
    daemon = new Daemon(s.site.cfgFile);
    cleanups.push(async () => void (await daemon.stop()));
    await until(() => s.lines.length > 0, 20_000, "the boot event");
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const key = () => loadEd25519PrivateKey(join(s.site.socDir, "command.key"), "test");
  const cmd = (o: Partial<Command> & Pick<Command, "action">): Command => ({ ...newCommand({ device, counter: 1, action: o.action, validityMs: 60_000 }), ...o });
  const sign = (c: Command, k = key()) => signCommand(c, k);
  const commandLines = () => s.lines.filter((l) => !("problem" in l) && (l as unknown as CmdLine).ocsf.unmapped?.command) as unknown as CmdLine[];
  const refusal = (reason: string) => until(() => commandLines().some((l) => l.ocsf.unmapped!.command!.reason === reason), 20_000, `the ${reason} refusal at the SOC`);
  const status = () => controlCall(socket, "commands.status") as Promise<{ mode: string; blocked: string[]; accepted: number; refused: number; counter: number }>;
  /** `gatewarden soc command DEVICE VERB [ARG]`, then waits until the daemon accepted it. */
  const soc = async (...args: string[]) => {
    const before = (await status()).accepted;
    const r = await runAsync(process.execPath, [BIN, "soc", "command", device, ...args, "--dir", s.site.socDir, "--broker", s.broker.url, "--mqtt-version", "4"], process.env);
    expect(r.status, r.stderr).toBe(0);
    const end = Date.now() + 20_000;
    while ((await status()).accepted <= before) {
      if (Date.now() > end) throw new Error(`command ${args.join(" ")} was not accepted: ${JSON.stringify(await status())}`);
      await new Promise((res) => setTimeout(res, 25));
    }
  };
  const client = () => RawClient.connect(port);

  it("refuses a retained command", async () => {
    await refusal("retained");
    expect((await status()).mode).toBe("normal");
  });

  it("each command changes the proxy: read-only, isolate, normal, block, close windows, pushed policy", async () => {
    await controlCall(socket, "window.open", { role: "engineer", minutes: 10, reason: "test" });
    const c = await client();
    expect(await c.request(1, WRITE)).toBe(WRITE);
    await soc("proxy-mode", "read-only");
    expect(await c.request(1, WRITE)).toBe("8601");
    expect(await c.request(1, READ)).toMatch(/^0302/);
    await soc("proxy-mode", "isolate");
    expect(await c.request(1, READ)).toBe("8301");
    await soc("proxy-mode", "normal");
    expect(await c.request(1, WRITE)).toBe(WRITE);
    await soc("block", "127.0.0.1");
    expect(await c.request(1, READ)).toBe("8301");
    await soc("unblock", "127.0.0.1");
    expect(await c.request(1, READ)).toMatch(/^0302/);
    await soc("close-windows");
    expect(await c.request(1, WRITE)).toBe("8601");
    const policy = join(s.root, "pushed-policy.yaml");
    writeFileSync(policy, `identities:\n  - { match: { address: ["127.0.0.1"] }, role: reader }\nroles:\n  reader:\n    units: [1]\n    functions: [read-only]\n    read: { holding: ["0-9"] }\n`);
    await soc("push-policy", policy);
    expect(await c.request(1, READ)).toMatch(/^0302/);
    expect(await c.request(1, READ_50)).toBe("8301");
    const hb = s.lines.filter((l) => (l as { class?: string }).class === "heartbeat").length;
    await soc("posture");
    await until(() => s.lines.filter((l) => (l as { class?: string }).class === "heartbeat").length > hb, 20_000, "the requested heartbeat");
    await soc("integrity");
    const accepted = () => commandLines().filter((l) => l.class === "audit" && l.ocsf.unmapped!.command!.outcome === "accepted").map((l) => l.ocsf.unmapped!.command!.action);
    await until(() => accepted().length >= 9, 20_000, "nine accepted-command events at the SOC");
    expect(accepted()).toEqual(["proxy_mode", "proxy_mode", "proxy_mode", "block_identity", "unblock_identity", "close_windows", "push_policy", "request_posture", "request_integrity"]);
  });

  it("refuses unsigned, tampered, foreign, expired, replayed and counter-rollback commands, each reported", async () => {
    const last = (await status()).counter;
    const other = generateKeyPairSync("ed25519").privateKey;
    await pub.publishAsync(topic, sign(cmd({ action: "proxy_mode", args: { mode: "isolate" }, counter: last + 10 }), other), { qos: 1 });
    await refusal("unsigned");
    const tampered = JSON.parse(sign(cmd({ action: "proxy_mode", args: { mode: "normal" }, counter: last + 11 }))) as { command: Command };
    tampered.command.args = { mode: "isolate" };
    await pub.publishAsync(topic, JSON.stringify(tampered), { qos: 1 });
    await refusal("bad_signature");
    await pub.publishAsync(topic, sign(cmd({ action: "proxy_mode", args: { mode: "isolate" }, counter: last + 12, device: "gw-other" })), { qos: 1 });
    await refusal("foreign_device");
    const past = Date.now() - 120_000;
    await pub.publishAsync(topic, sign(cmd({ action: "proxy_mode", args: { mode: "isolate" }, counter: last + 13, issued: past, expires: past + 60_000 })), { qos: 1 });
    await refusal("expired");
    const ok = sign(cmd({ action: "request_posture", counter: last + 20 }));
    await pub.publishAsync(topic, ok, { qos: 1 });
    await pub.publishAsync(topic, ok, { qos: 1 });
    await refusal("replayed");
    await pub.publishAsync(topic, sign(cmd({ action: "proxy_mode", args: { mode: "isolate" }, counter: last + 15 })), { qos: 1 });
    await refusal("counter_rollback");
    await pub.publishAsync(topic, "not json", { qos: 1 });
    await refusal("malformed");
    const st = await status();
    expect(st.mode).toBe("normal");
    expect(st.counter).toBe(last + 20);
    const refusals = commandLines().filter((l) => l.class === "finding").map((l) => l.ocsf.unmapped!.command!.reason);
    expect(refusals).toEqual(["retained", "unsigned", "bad_signature", "foreign_device", "expired", "replayed", "counter_rollback", "malformed"]);
    expect(s.problems()).toEqual([]);
  });
});
