import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { copyFileSync, cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Runtime } from "../../agent/runtime";
import { SocReceiver } from "../../agent/soc/receive";
import type { OutLine } from "../../agent/soc/verifier";
import { TrustStore } from "../../agent/soc/trust";
import { verifyFile } from "../../agent/soc/verify-file";
import { account, unexpectedProblems } from "../helpers/daemon";
import { makeSite, silent, sleep, tempDir, until } from "../helpers/fixture";
import { Mosquitto, MOSQUITTO } from "../helpers/mosquitto";
import { findOpenssl, makePki, type TestPki } from "../helpers/tls";
import { forwarderOf } from "../helpers/runtime";
import type { CertificateStatus } from "../../agent/doctor/certificates";

const OPENSSL = findOpenssl();
const missing = [!MOSQUITTO && "mosquitto (apt install mosquitto)", !OPENSSL && "openssl"].filter(Boolean).join(" and ");
const skip = missing !== "";
const why = skip ? ` [skipped: needs ${missing}]` : "";
const DEVICE = "gw-test-1";
const SOC_CN = "soc-receiver";
const TOPIC = "gatewarden/v1/+/events";

const stopped = new WeakSet<SocReceiver>();
async function stopOnce(rx: SocReceiver): Promise<void> {
  if (stopped.has(rx)) return;
  stopped.add(rx);
  await rx.stop();
}

describe("agent -> Mosquitto (mTLS, MQTT 5) -> SOC receiver", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  // One throwaway PKI for the file, made with openssl: CA, server (127.0.0.1, localhost), clients.
  let pki: TestPki;
  let pkiDir: ReturnType<typeof tempDir> | undefined;
  beforeAll(() => {
    if (skip) return;
    pkiDir = tempDir("gw-pki-");
    pki = makePki(pkiDir.dir, [DEVICE, SOC_CN], OPENSSL);
  });
  afterAll(() => pkiDir?.cleanup());

  async function setup(o: { acl?: string; settings?: Record<string, string>; extra?: string[] } = {}) {
    const t = tempDir("gw-mosq-");
    cleanups.push(t.cleanup);
    const mq = new Mosquitto({ dir: t.dir, tls: { ca: pki.ca, cert: pki.server.cert, key: pki.server.key }, acl: o.acl, extra: o.extra });
    await mq.start();
    cleanups.push(() => mq.stop());
    const gw = pki.clients[DEVICE]!;
    const site = makeSite(t.dir, {
      device: DEVICE,
      settings: {
        "upstream.url": mq.url,
        "upstream.ca": pki.ca,
        "upstream.cert": gw.cert,
        "upstream.key": gw.key,
        "upstream.reconnect_min_ms": "100",
        "upstream.reconnect_max_ms": "500",
        "heartbeat.interval_ms": "1000",
        ...o.settings,
      },
    });
    const receiver = (name: string, dir: string, lines: OutLine[], share?: string, gapTimeoutMs = 60_000) =>
      new SocReceiver({
        broker: mq.url,
        dir,
        out: join(t.dir, `${name}.jsonl`),
        topic: TOPIC,
        share,
        clientId: name,
        ca: pki.ca,
        cert: pki.clients[SOC_CN]!.cert,
        key: pki.clients[SOC_CN]!.key,
        protocolVersion: 5,
        gapTimeoutMs,
        dedupeWindow: 100_000,
        log: silent,
        onLine: (l) => lines.push(l),
      });
    return { t, pki, mq, site, receiver };
  }

  async function runAgent(site: ReturnType<typeof makeSite>, during: (rt: Runtime) => Promise<void>, drainMs = 15_000): Promise<Runtime> {
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    await during(rt);
    rt.stopSources();
    await rt.stop("test", drainMs);
    return rt;
  }

  it.skipIf(skip)(`delivers every event exactly once, verified, over TLS with client certificates${why}`, async () => {
    const { t, site, receiver, mq } = await setup({ settings: { "simulate.events_per_s": "800" } });
    const lines: OutLine[] = [];
    const certificates = () => lines.flatMap((l) => ("problem" in l || l.class !== "heartbeat" ? [] : [(l.ocsf.unmapped as { heartbeat?: { posture?: { certificates?: CertificateStatus[] } } } | undefined)?.heartbeat?.posture?.certificates])).find((c) => c !== undefined);
    const rx = receiver("soc-1", site.socDir, lines);
    await rx.start();
    cleanups.push(() => stopOnce(rx));
    const rt = await runAgent(site, async (rt) => {
      await until(() => rt.upstreamState() === "up", 20_000, "the agent to connect over mTLS");
      await until(() => rx.counters.events >= 500, 30_000, "500 events through the broker");
      await until(() => certificates() !== undefined, 30_000, "a heartbeat with the posture's certificates");
    });
    // The heartbeat says how long the certificates it connects with have left (the test PKI's: 400 days).
    expect(certificates()!.map((c) => [c.key, c.state, c.days_left! >= 398])).toEqual([["upstream.ca", "ok", true], ["upstream.cert", "ok", true]]);
    expect(lines.some((l) => !("problem" in l) && l.class === "finding" && (l.ocsf.unmapped as { posture?: { certificate?: unknown } } | undefined)?.posture?.certificate !== undefined)).toBe(false);
    const committed = rt.recorder.counters.committed;
    expect(forwarderOf(rt).counters.rejected).toBe(0);
    await until(() => rx.counters.events >= committed, 15_000, `the receiver to verify ${committed} events (has ${rx.counters.events})`);
    const a = account(lines, committed - 1);
    expect(unexpectedProblems(a, [])).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.events.length).toBe(committed);
    expect(a.events.every((e) => e.verified)).toBe(true);
    // The output file re-verifies offline: signatures, hashes, an unbroken chain, no gaps.
    await stopOnce(rx);
    const v = await verifyFile(join(t.dir, "soc-1.jsonl"), new TrustStore(site.socDir));
    expect(v.problems).toEqual({});
    expect(v.verified).toBe(committed);
    // Both sides authenticated with certificates: the broker named them by their CN.
    expect(mq.log).toMatch(new RegExp(`New client connected from 127\\.0\\.0\\.1:\\d+ as gatewarden-${DEVICE} .*u'${DEVICE}'`));
    expect(mq.log).toMatch(new RegExp(`as soc-1 .*u'${SOC_CN}'`));
  });

  it.skipIf(skip)(`refuses a client without a certificate${why}`, async () => {
    const { mq, pki } = await setup();
    const mqtt = (await import("mqtt")).default;
    const { readFileSync } = await import("node:fs");
    const c = mqtt.connect(mq.url, { ca: readFileSync(pki.ca), protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 3000, rejectUnauthorized: true });
    const outcome = await new Promise<string>((resolve) => {
      c.once("connect", () => resolve("connected"));
      c.once("error", (e) => resolve(`error: ${e.message}`));
      c.once("close", () => resolve("closed"));
    });
    c.end(true);
    expect(outcome).not.toBe("connected");
  });

  /** Two receivers in one shared-subscription group, each with its own state. */
  async function shared(gapTimeoutMs: number) {
    // Round-robin members cannot acknowledge end to end (each sees part of the stream): broker acks.
    const { t, site, receiver } = await setup({ settings: { "simulate.events_per_s": "600", "upstream.max_batch_events": "20", "upstream.ack": "broker" } });
    // A second SOC receiver with its own state, the same SOC key and trust.
    const dir2 = join(t.dir, "soc-b");
    mkdirSync(dir2, { mode: 0o700 });
    copyFileSync(join(site.socDir, "soc.key"), join(dir2, "soc.key"));
    cpSync(join(site.socDir, "trusted"), join(dir2, "trusted"), { recursive: true });
    const la: OutLine[] = [];
    const lb: OutLine[] = [];
    const ra = receiver("soc-a", site.socDir, la, "socs", gapTimeoutMs);
    const rb = receiver("soc-b", dir2, lb, "socs", gapTimeoutMs);
    await ra.start();
    cleanups.push(() => stopOnce(ra));
    await rb.start();
    cleanups.push(() => stopOnce(rb));
    const rt = await runAgent(site, async (rt) => {
      await until(() => rt.upstreamState() === "up", 20_000, "the agent to connect");
      await until(() => ra.counters.events > 100 && rb.counters.events > 100, 30_000, "both members to receive events");
    });
    const committed = rt.recorder.counters.committed;
    await until(() => ra.counters.events + rb.counters.events >= committed, 15_000, `the receivers to verify ${committed} events between them (have ${ra.counters.events}+${rb.counters.events})`);
    await sleep(200);
    return { ra, rb, la, lb, committed, site };
  }

  it.skipIf(skip)(`splits the stream over an MQTT v5 shared subscription (--share)${why}`, async () => {
    const { ra, rb, la, lb, committed } = await shared(60_000);
    // Each message went to one member of the group only: together exactly the stream, once.
    expect(ra.counters.events).toBeGreaterThan(0);
    expect(rb.counters.events).toBeGreaterThan(0);
    const a = account([...la, ...lb], committed - 1);
    expect(unexpectedProblems(a, [])).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.events.length).toBe(committed);
  });

  // Mosquitto deals a device's messages round-robin to the group: each member sees part of
  // every stream, so with --share the receivers leave continuity to `soc verify` over their
  // merged outputs, which must find the whole chain.
  it.skipIf(skip)(`receivers sharing a group report no false gaps, and their merged outputs verify whole${why}`, async () => {
    const { la, lb, site } = await shared(300);
    await sleep(2000);
    expect([...la, ...lb].filter((l) => "problem" in l && l.problem === "gap")).toEqual([]);
    const merged = join(tmpdir(), `gw-merged-${process.pid}.jsonl`);
    writeFileSync(merged, [...la, ...lb].map((l) => JSON.stringify(l)).join("\n") + "\n");
    try {
      const r = await verifyFile(merged, new TrustStore(site.socDir));
      expect(r.problem_lines.filter((p) => p.problem !== "duplicate")).toEqual([]);
      expect(r.verified).toBe(r.events);
    } finally {
      rmSync(merged, { force: true });
    }
  });

  it.skipIf(skip)(`a batch the broker rejects (ACL, PUBACK 0x87) is parked and reported; the rest keeps flowing${why}`, async () => {
    // Each gateway writes its events and reads its acks; the SOC reads all events and writes acks.
    const soc = `user ${SOC_CN}\ntopic read gatewarden/v1/+/events\ntopic write gatewarden/v1/+/ack\n`;
    const allow = `user ${DEVICE}\ntopic write gatewarden/v1/${DEVICE}/events\ntopic read gatewarden/v1/${DEVICE}/ack\n\n${soc}`;
    const deny = `user ${DEVICE}\ntopic write gatewarden/v1/somewhere-else/events\ntopic read gatewarden/v1/${DEVICE}/ack\n\n${soc}`;
    const { site, receiver, mq } = await setup({ acl: allow, settings: { "simulate.events_per_s": "300", "upstream.parked_retry_ms": "3000", "upstream.max_batch_events": "50" } });
    const lines: OutLine[] = [];
    const rx = receiver("soc-1", site.socDir, lines);
    await rx.start();
    cleanups.push(() => stopOnce(rx));
    let parkedSeen = 0;
    let heldRange: [number, number] = [-1, -1];
    const rt = await runAgent(site, async (rt) => {
      await until(() => rt.upstreamState() === "up", 20_000, "the agent to connect");
      await until(() => rx.counters.events > 0, 20_000, "events delivered before the ACL denies");
      await mq.setAcl(deny);
      // Parked rows are retried every parked_retry_ms. To show that new events overtake them,
      // the retries are held back (the retry finds nothing to unpark) from the moment the ACL
      // allows again until a newer event has reached the SOC; however slow Mosquitto's reload
      // is on a loaded machine, no retry can deliver the parked rows first.
      let retries = 0;
      let hold = false;
      const unpark = rt.outbox.unparkAll.bind(rt.outbox);
      rt.outbox.unparkAll = () => (retries++, hold ? 0 : unpark());
      await until(() => forwarderOf(rt).counters.rejected > 0, 20_000, "a rejected batch");
      await until(() => (parkedSeen = rt.outbox.stats().parked) > 0, 20_000, "rows to be parked");
      const r = retries;
      await until(() => retries > r, 20_000, "a parked retry");
      hold = true;
      // The rows parked from here on stay parked until `hold` ends. Taken as a fixed set: rows
      // the retry above put back in flight are not parked while they are, and a set read while
      // they were would be empty and let any old line pass for a newer one.
      await until(() => rt.outbox.stats().parked > 0, 20_000, "rows parked while retries are held");
      const held = rt.outbox.parkedRows(100_000).map((row) => row.seq);
      heldRange = [Math.min(...held), Math.max(...held)];
      await mq.setAcl(allow);
      await until(() => lines.some((l) => !("problem" in l) && l.seq > heldRange[1]), 30_000, "a newer event to reach the SOC while the parked ones wait");
      hold = false;
      await until(() => rt.outbox.stats().parked === 0 && rt.outbox.stats().depth < 50, 30_000, "parked rows to be retried and delivered");
    });
    const committed = rt.recorder.counters.committed;
    // What Mosquitto 2.0 really does: an ACL-denied QoS 1 PUBLISH from an MQTT 5 client gets a
    // PUBACK with reason code 0x87 (Not authorized); the connection stays up.
    expect(mq.log).toMatch(/Denied PUBLISH from gatewarden-gw-test-1/);
    expect(forwarderOf(rt).counters.rejected).toBeGreaterThan(0);
    expect(parkedSeen).toBeGreaterThan(0);
    await until(() => rx.counters.events >= committed, 15_000, `the receiver to verify ${committed} events (has ${rx.counters.events})`);
    const a = account(lines, committed - 1);
    expect(unexpectedProblems(a, [])).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(a.missing).toEqual([]);
    // The SOC got the signed report of the rejection, naming reason code 0x87 and the range.
    const reports = a.events.filter((e) => (e.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "upstream_rejected");
    expect(reports.length).toBeGreaterThan(0);
    const r0 = reports[0]!.ocsf.unmapped as { reason_code: number; from: [number, number]; to: [number, number] };
    expect(r0.reason_code).toBe(0x87);
    // Not blocked: events recorded after the held rows reached the SOC before the first of them.
    const order = new Map(a.events.map((e, i) => [e.seq, i]));
    const firstHeld = order.get(heldRange[0])!;
    const overtook = a.events.slice(0, firstHeld).filter((e) => e.seq > heldRange[1]);
    expect(overtook.length).toBeGreaterThan(0);
  });

  it.skipIf(skip)(`an event larger than the broker's maximum packet is parked and reported; the rest keeps flowing${why}`, async () => {
    // Mosquitto's max_packet_size: it closes the connection of a client that sends more (0x95),
    // and tells MQTT 5 clients the limit in CONNACK. Sending the event anyway would close the
    // connection after every reconnect, and nothing behind it would reach the SOC.
    const { site, receiver, mq } = await setup({ extra: ["max_packet_size 8192"], settings: { "simulate.events_per_s": "100" } });
    const lines: OutLine[] = [];
    const rx = receiver("soc-1", site.socDir, lines);
    await rx.start();
    cleanups.push(() => stopOnce(rx));
    let big = -1;
    let boot = -1;
    const rt = await runAgent(site, async (rt) => {
      await until(() => rt.upstreamState() === "up", 20_000, "the agent to connect");
      await until(() => rx.counters.events > 0, 20_000, "events delivered");
      // 40 KB of base64 noise: under the recorder's bound of one event, and it does not compress.
      const env = await rt.recorder.recordAndWait({ class: "finding", severity: 4, ocsf: { class_uid: 2004, activity_id: 1, message: "large", unmapped: { blob: randomBytes(30_000).toString("base64") } } });
      big = env.seq;
      boot = env.boot;
      await until(() => forwarderOf(rt).counters.too_large > 0, 20_000, "the large event to be parked");
      await until(() => lines.some((l) => !("problem" in l) && l.seq > big + 5), 20_000, "newer events to reach the SOC");
      await until(() => lines.some((l) => !("problem" in l) && (l.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "upstream_too_large"), 20_000, "the report to reach the SOC");
      expect(rt.outbox.stats().parked).toBe(1);
    }, 1000); // the parked event stays: no point waiting for it at stop
    const committed = rt.recorder.counters.committed;
    expect(mq.log).not.toMatch(/exceeded maximum packet size|packet too large/i);
    expect(forwarderOf(rt).counters.reconnects).toBe(0);
    await until(() => rx.counters.events >= committed - 1, 15_000, `the receiver to verify ${committed - 1} events (has ${rx.counters.events})`);
    const a = account(lines, committed - 1);
    expect(a.doubled).toEqual([]);
    expect(a.missing).toEqual([`${boot}:${big}`]); // parked in the outbox, and named to the SOC:
    const report = a.events.find((e) => (e.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "upstream_too_large")!;
    expect(report.ocsf.unmapped).toMatchObject({ max_packet_bytes: 8192, from: [boot, big], to: [boot, big] });
    expect((report.ocsf.unmapped as { message_bytes: number }).message_bytes).toBeGreaterThan(8192);
    expect(report.ocsf.message).toMatch(new RegExp(`^Event \\d+:${big} was not sent: its message is \\d+ bytes, more than the broker takes \\(8192 bytes`));
  });
});
