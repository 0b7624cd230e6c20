import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mqtt from "mqtt";
import { loadSocPublicKey } from "../../agent/keys/identity";
import { newCommand, signCommand } from "../../firmware-hooks/commands";
import { Runtime } from "../../agent/runtime";
import { SocReceiver } from "../../agent/soc/receive";
import type { OutLine, ProblemLine } from "../../agent/soc/verifier";
import { account, unexpectedProblems } from "../helpers/daemon";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";
import { deepJson, sealBatch } from "../helpers/hostile";
import { havePeer } from "../helpers/peers";
import { Mosquitto, MOSQUITTO } from "../helpers/mosquitto";
import { findOpenssl, makePki } from "../helpers/tls";

const OPENSSL = findOpenssl();
const ok = havePeer(MOSQUITTO ?? "/usr/sbin/mosquitto") && havePeer(OPENSSL ?? "/usr/bin/openssl");
const DEVICE = "gw-test-1";
const FLOODER = "gw-flood";
const SOC_CN = "soc-receiver";
const COMMANDER_CN = "soc-commander";

/** The README's recommended Mosquitto settings and ACL, as written there. */
function readmeBrokerConfig(): { settings: string[]; acl: string } {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const blocks = [...readme.matchAll(/```conf\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const conf = blocks.find((b) => b.startsWith("per_listener_settings"))!;
  const acl = blocks.find((b) => b.includes("pattern write"))!;
  // The listener, its TLS files and the ACL file are the test broker's own; persistence would
  // write into the working directory.
  const own = /^(per_listener_settings|listener|cafile|certfile|keyfile|require_certificate|use_identity_as_username|acl_file|persistence)\b/;
  const settings = conf.split("\n").filter((l) => l.trim() && !l.startsWith("#") && !own.test(l));
  return { settings, acl };
}

describe.skipIf(!ok)("the README's SOC broker configuration (Mosquitto, mTLS, ACL)", () => {
  const t = tempDir("gw-soc-broker-");
  let mq: Mosquitto;
  afterAll(async () => {
    await mq?.stop();
    t.cleanup();
  });
  beforeAll(async () => {
    const pki = makePki(t.dir, [DEVICE, FLOODER, SOC_CN, COMMANDER_CN], OPENSSL);
    const { settings, acl } = readmeBrokerConfig();
    expect(settings).toContain("max_queued_messages 100000");
    mq = new Mosquitto({ dir: t.dir, tls: { ca: pki.ca, cert: pki.server.cert, key: pki.server.key }, acl, extra: settings });
    await mq.start();
    Object.assign(mq, { pki });
  });

  it("a flood of 8,000 batches from one client neither reaches another device's topic nor costs a legitimate event", async () => {
    const pki = (mq as unknown as { pki: ReturnType<typeof makePki> }).pki;
    const site = makeSite(t.dir, { device: DEVICE, settings: { "upstream.url": mq.url, "upstream.ca": pki.ca, "upstream.cert": pki.clients[DEVICE]!.cert, "upstream.key": pki.clients[DEVICE]!.key, "simulate.events_per_s": "200", "heartbeat.interval_ms": "1000" } });
    const lines: OutLine[] = [];
    const rx = new SocReceiver({ broker: mq.url, dir: site.socDir, out: join(t.dir, "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-1", ca: pki.ca, cert: pki.clients[SOC_CN]!.cert, key: pki.clients[SOC_CN]!.key, protocolVersion: 5, gapTimeoutMs: 60_000, dedupeWindow: 100_000, unknownSummaryMs: 5000, log: silent, onLine: (l) => lines.push(l) });
    await rx.start();
    const rt = new Runtime(site.load(), silent);
    try {
      await rt.start();
      // A client with a valid certificate whose device the SOC does not trust floods its own
      // topic, and tries the legitimate device's topic too.
      const flood = await mqtt.connectAsync(mq.url, { protocolVersion: 5, clientId: FLOODER, ca: readFileSync(pki.ca), cert: readFileSync(pki.clients[FLOODER]!.cert), key: readFileSync(pki.clients[FLOODER]!.key), rejectUnauthorized: true, reconnectPeriod: 0 });
      const socPub = loadSocPublicKey(join(site.socDir, "soc.pub"));
      const junk = sealBatch(socPub, FLOODER, "[]");
      const spoof = sealBatch(socPub, DEVICE, "[]");
      // Refused by the ACL: PUBACK 0x87 (Not authorized).
      await expect(flood.publishAsync(`gatewarden/v1/${DEVICE}/events`, spoof, { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
      let next = 0;
      await Promise.all(Array.from({ length: 50 }, async () => {
        while (next++ < 8000) await flood.publishAsync(`gatewarden/v1/${FLOODER}/events`, junk, { qos: 1 });
      }));
      await flood.endAsync();
      const floodLines = () => lines.filter((l): l is ProblemLine => "problem" in l && l.device === FLOODER);
      await until(() => floodLines().reduce((n, p) => n + (p.batches as number), 0) === 8000, 60_000, "the receiver to account for all 8,000 flood batches");
      rt.stopSources();
      // The SOC's end-to-end acks (the default upstream.ack: soc) pass the same ACL: the receiver
      // may write the gateway's ack topic and the gateway read it, so every row is freed.
      await until(() => (rt.recorder.flush(), rt.outbox.stats().depth === 0), 60_000, "the SOC to acknowledge every event through the README's ACL (outbox depth 0)");
      await rt.stop("test", 15_000);
      const committed = rt.recorder.counters.committed;
      await until(() => lines.filter((l) => !("problem" in l) && l.device === DEVICE).length >= committed, 30_000, `all ${committed} legitimate events`);
      const a = account(lines.filter((l) => l.device === DEVICE), committed - 1);
      expect(unexpectedProblems(a, ["duplicate"])).toEqual([]);
      expect(a.missing).toEqual([]);
      expect(a.doubled).toEqual([]);
      // The flood is a few lines (one at once, one summary per 5 s here), not 8,000; the
      // spoofed batch never arrived.
      expect(floodLines().length).toBeLessThanOrEqual(20);
      expect(lines.filter((l) => "problem" in l && l.problem === "malformed")).toEqual([]);
    } finally {
      rt.stopSources();
      await rt.stop("test", 5000).catch(() => undefined);
      await rx.stop();
    }
  }, 120_000);

  it("lets the command sender's certificate command a gateway, and no other gateway", async () => {
    const pki = (mq as unknown as { pki: ReturnType<typeof makePki> }).pki;
    const dir = join(t.dir, "commands");
    const keys = generateKeyPairSync("ed25519");
    const site = makeSite(dir, { device: DEVICE, settings: { "upstream.url": mq.url, "upstream.ca": pki.ca, "upstream.cert": pki.clients[DEVICE]!.cert, "upstream.key": pki.clients[DEVICE]!.key, "upstream.client_id": "gw-commanded" } });
    const pubFile = join(site.socDir, "command.pub");
    writeFileSync(pubFile, keys.publicKey.export({ type: "spki", format: "pem" }));
    const cfg = readFileSync(site.cfgFile, "utf8");
    writeFileSync(site.cfgFile, `${cfg}\ncommands:\n  soc_command_key: ${pubFile}\n`);
    const lines: OutLine[] = [];
    const rx = new SocReceiver({ broker: mq.url, dir: site.socDir, out: join(t.dir, "commands.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-commands", ca: pki.ca, cert: pki.clients[SOC_CN]!.cert, key: pki.clients[SOC_CN]!.key, protocolVersion: 5, gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
    await rx.start();
    const rt = new Runtime(site.load(), silent);
    const tls = (cn: string) => ({ protocolVersion: 5 as const, clientId: `${cn}-test`, ca: readFileSync(pki.ca), cert: readFileSync(pki.clients[cn]!.cert), key: readFileSync(pki.clients[cn]!.key), rejectUnauthorized: true, reconnectPeriod: 0 });
    const topic = `gatewarden/v1/${DEVICE}/commands`;
    const accepted = () => lines.some((l) => !("problem" in l) && (l.ocsf as { unmapped?: { command?: { action?: string } } }).unmapped?.command?.action === "request_posture");
    try {
      await rt.start();
      // Another gateway's certificate may not command this one: PUBACK 0x87 (Not authorized).
      const other = await mqtt.connectAsync(mq.url, tls(FLOODER));
      const forged = signCommand(newCommand({ device: DEVICE, counter: 1, action: "request_posture", validityMs: 60_000 }), keys.privateKey);
      await expect(other.publishAsync(topic, forged, { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
      await other.endAsync();
      // The command sender's may. A command is not retained, so it is sent again (a new counter
      // each time) until the gateway, subscribed by then, has accepted one.
      const commander = await mqtt.connectAsync(mq.url, tls(COMMANDER_CN));
      let counter = 1;
      await until(async () => {
        if (accepted()) return true;
        await commander.publishAsync(topic, signCommand(newCommand({ device: DEVICE, counter: counter++, action: "request_posture", validityMs: 60_000 }), keys.privateKey), { qos: 1 });
        return false;
      }, 60_000, "a SOC command through the README's ACL to be accepted (its audit event at the SOC)");
      await commander.endAsync();
    } finally {
      rt.stopSources();
      await rt.stop("test", 5000).catch(() => undefined);
      await rx.stop();
    }
  }, 120_000);

  // The campaign's first finding, on the broker it was found with: poison messages that were
  // never acknowledged filled the receiver's in-flight window (20 here) and no event was
  // verified again. Now each is one problem line, acknowledged, and the window stays open.
  it("30 poison messages from a compromised gateway do not fill the receiver's in-flight window", async () => {
    const pki = (mq as unknown as { pki: ReturnType<typeof makePki> }).pki;
    const site = makeSite(join(t.dir, "poison"), { device: DEVICE, settings: { "upstream.url": mq.url, "upstream.ca": pki.ca, "upstream.cert": pki.clients[DEVICE]!.cert, "upstream.key": pki.clients[DEVICE]!.key, "upstream.client_id": "gw-legit", "simulate.events_per_s": "100", "heartbeat.interval_ms": "1000" } });
    const lines: OutLine[] = [];
    const rx = new SocReceiver({ broker: mq.url, dir: site.socDir, out: join(t.dir, "poison.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-poison", ca: pki.ca, cert: pki.clients[SOC_CN]!.cert, key: pki.clients[SOC_CN]!.key, protocolVersion: 5, gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
    await rx.start();
    const rt = new Runtime(site.load(), silent);
    try {
      const evil = await mqtt.connectAsync(mq.url, { protocolVersion: 5, clientId: "gw-evil", ca: readFileSync(pki.ca), cert: readFileSync(pki.clients[DEVICE]!.cert), key: readFileSync(pki.clients[DEVICE]!.key), rejectUnauthorized: true, reconnectPeriod: 0 });
      const socPub = loadSocPublicKey(join(site.socDir, "soc.pub"));
      const hex = "0".repeat(64);
      const poison = sealBatch(socPub, DEVICE, `[{"v":1,"device":"${DEVICE}","boot":1,"seq":1,"time":1,"mono":1,"class":"telemetry","severity":1,"ocsf":${deepJson(20_000)},"prev":"${hex}","hash":"${hex}","sig":"AA=="}]`);
      for (let i = 0; i < 30; i++) await evil.publishAsync(`gatewarden/v1/${DEVICE}/events`, poison, { qos: 1 });
      await evil.endAsync();
      await rt.start();
      await until(() => lines.filter((l) => !("problem" in l)).length >= 50, 30_000, "the legitimate gateway's events, verified");
      expect(lines.filter((l) => "problem" in l).map((l) => [(l as ProblemLine).problem, (l as ProblemLine).detail])).toEqual(Array(30).fill(["malformed", expect.stringContaining("nested deeper than 32")]));
    } finally {
      rt.stopSources();
      await rt.stop("test", 5000).catch(() => undefined);
      await rx.stop();
    }
  }, 120_000);
});
