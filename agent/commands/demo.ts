import type { Command } from "commander";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { controlCall } from "../core/control-client";
import { DemoClient, DemoPlant } from "../demo/plant";
import { FeederSim } from "../demo/energy";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../config/load";
import { setConfigValue } from "../config/edit";
import { configTemplate } from "../config/template";
import { DaemonError } from "../core/errors";
import { EmbeddedBroker } from "../embedded-broker";
import { exportTrust, generateDeviceKey, generateSocKeys } from "../keys/identity";
import { createLogger } from "../log";
import { Runtime } from "../runtime";
import { SocReceiver } from "../soc/receive";
import { TrustStore } from "../soc/trust";
import type { OutLine } from "../soc/verifier";
import { makeDirs } from "../core/dirs";

/**
 * The whole chain on one machine: an embedded broker, one gateway daemon producing events and
 * the SOC receiver verifying them, with a broker outage in the middle. Prints what the SOC
 * receives and, at the end, events committed versus events the SOC verified.
 */
export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("Run gateway + embedded MQTT broker + SOC receiver for a while, with a broker outage in the middle")
    .option("--duration <SECONDS>", "how long to produce events", "20")
    .option("--rate <EVENTS_PER_S>", "simulated background events per second (besides the plant's)", "50")
    .option("--keep", "keep the demo directory instead of deleting it")
    .option("--json", "print the final summary as JSON")
    .action(
      async (opts: { duration: string; rate: string; keep?: boolean; json?: boolean }) => {
        const duration = Number(opts.duration);
        const rate = Number(opts.rate);
        if (!(duration >= 3 && duration <= 86_400)) throw new DaemonError("USAGE", "--duration must be between 3 and 86400 seconds");
        if (!(rate >= 1 && rate <= 50_000)) throw new DaemonError("USAGE", "--rate must be between 1 and 50000");
        const summary = await runDemo({ duration, rate, keep: !!opts.keep, quiet: !!opts.json });
        if (opts.json) process.stdout.write(JSON.stringify(summary, null, 2) + "\n");
        if (!summary.ok) process.exitCode = 1;
      },
    );
}

export interface DemoSummary {
  ok: boolean;
  dir: string;
  committed: number;
  soc_verified: number;
  problems: Record<string, number>;
  outage_s: number;
  /** What each client's requests got from the proxy, as printed (`denied (exception 01)`, `allowed (...)`). */
  outcomes: Record<string, string>;
  /** The pump speed setpoint (holding 100) in the PLC before the intruder and after the demo. */
  setpoint_rpm: { before: number; after: number };
  /** What the SOC verified: Modbus denials per client identity, malformed frames, level findings. */
  soc_findings: { modbus_denied: Record<string, number>; modbus_malformed: number; level_out_of_range: number; meter_rollback: number };
}

/** Who is who: the proxy tells plain Modbus TCP clients apart by source address. */
const SCADA = "127.0.0.2";
const ENGINEER = "127.0.0.3";
const INTRUDER = "127.0.0.4";

export async function runDemo(o: { duration: number; rate: number; keep: boolean; quiet: boolean }): Promise<DemoSummary> {
  const say = (s: string) => {
    if (!o.quiet) process.stdout.write(s + "\n");
  };
  const dir = mkdtempSync(join(tmpdir(), "gatewarden-demo-"));
  const gw = join(dir, "gateway");
  const socDir = join(dir, "soc");
  // Everything started is stopped in reverse order, whatever happens.
  const stack: (() => Promise<void> | void)[] = [() => void (o.keep || rmSync(dir, { recursive: true, force: true }))];
  try {
    return await demoBody(o, dir, gw, socDir, say, stack);
  } finally {
    for (const stop of stack.reverse()) await stop();
  }
}

async function demoBody(
  o: { duration: number; rate: number; keep: boolean },
  dir: string,
  gw: string,
  socDir: string,
  say: (s: string) => void,
  stack: (() => Promise<void> | void)[],
): Promise<DemoSummary> {
  const broker = new EmbeddedBroker();
  await broker.start();
  stack.push(() => broker.stop());
  say(`[demo] embedded MQTT broker on ${broker.url}; files in ${dir}`);

  // SOC side: sealing keys; gateway side: identity and config; then trust the gateway.
  makeDirs(socDir, "demo SOC directory");
  generateSocKeys(join(socDir, "soc.key"), join(socDir, "soc.pub"));
  makeDirs(join(gw, "keys"), "demo gateway key directory");
  const key = generateDeviceKey(join(gw, "keys", "device.key"), join(gw, "keys", "device.pub"));
  const cfgFile = join(gw, "gatewarden.yaml");
  writeFileSync(cfgFile, configTemplate({ deviceId: "demo-gw-01", dataDir: "data" }), { mode: 0o640 });
  for (const [k, v] of [
    ["upstream.url", broker.url],
    ["upstream.protocol_version", "4"],
    ["upstream.soc_public_key", join(socDir, "soc.pub")],
    ["heartbeat.interval_ms", "2000"],
    ["simulate.events_per_s", String(o.rate)],
    ["log.level", process.env.GATEWARDEN_DEMO_LOG ?? "warn"],
  ] as const)
    setConfigValue(cfgFile, k, v);
  TrustStore.add(socDir, JSON.stringify(exportTrust("demo-gw-01", key)), "demo");

  // The plant: a PLC behind the gateway's Modbus proxy, a tank level the detectors watch.
  const plant = new DemoPlant();
  await plant.start();
  stack.push(() => plant.stop());
  const proxyPort = await freePort();
  // A street feeder (main meter and sub-meters), simulated time one minute per second.
  const feeder = new FeederSim({ seed: 1, speed: 60 });
  const feederPort = await feeder.listen(0);
  stack.push(() => feeder.close());
  appendFileSync(cfgFile, demoSiteYaml(proxyPort, plant.port, feederPort));
  say(`[plant] PLC on 127.0.0.1:${plant.port}; SCADA (${SCADA}, role scada: read-only) and the engineer (${ENGINEER}, role engineer: writes in a write window) reach it only through the proxy on 127.0.0.1:${proxyPort}`);

  let shown = 0;
  say(`[feeder] street feeder meters on 127.0.0.1:${feederPort}, unit 2 behind the proxy; the gateway reads the main meter`);
  const findings: DemoSummary["soc_findings"] = { modbus_denied: {}, modbus_malformed: 0, level_out_of_range: 0, meter_rollback: 0 };
  const receiver = new SocReceiver({
    broker: broker.url,
    dir: socDir,
    out: join(socDir, "events.jsonl"),
    topic: "gatewarden/v1/+/events",
    clientId: "demo-soc",
    protocolVersion: 4,
    gapTimeoutMs: 60_000,
    dedupeWindow: 100_000,
    log: createLogger("error", 2),
    onLine: (l: OutLine) => {
      if (!("problem" in l)) countFinding(findings, l.ocsf);
      if (!("problem" in l) && l.class === "heartbeat") return;
      if ("problem" in l && l.problem === "duplicate") say(`[soc] de-duplicated ${l.device} ${l.boot}:${l.first} (resent after the outage)`);
      else if ("problem" in l) say(`[soc] PROBLEM ${l.problem} ${l.device ?? ""} ${l.boot ?? ""}:${l.first ?? ""}-${l.last ?? ""} ${l.detail}`);
      else if (l.class !== "telemetry" && shown++ < 400) say(`[soc] verified ${l.device} ${l.boot}:${l.seq} ${l.class} sev=${l.severity} ${String(l.ocsf.message)}`);
    },
  });
  await receiver.start();
  stack.push(() => receiver.stop());

  const loaded = loadConfig(cfgFile);
  const rt = new Runtime(loaded, createLogger(process.env.GATEWARDEN_DEMO_LOG ?? "warn", 2));
  await rt.start();
  stack.push(() => rt.stop("demo ended"));
  say(`[gateway] demo-gw-01 running: Modbus proxy, detectors on the tank level and the feeder meter, ${o.rate} simulated events/s, heartbeat every 2 s`);

  // SCADA polls the level and the pump flow through the proxy (read-only role).
  const outcomes: Record<string, string> = {};
  const tell = (who: string, what: string, key: string, outcome: string) => {
    outcomes[key] = outcome;
    say(`[${who}] ${what}: ${outcome}`);
  };
  const scada = await DemoClient.connect(proxyPort, SCADA);
  tell("scada", "write 1600 rpm to the pump speed setpoint (holding 100)", "scada_write", answer(await scada.request(1, "06 0064 0640")));
  let scadaReads = 0;
  const scadaTimer = setInterval(() => {
    void scada.request(1, "04 001e 0002").then((r) => {
      if (r.startsWith("0404") && scadaReads++ % 20 === 0) say(`[scada] tank level ${(parseInt(r.slice(4, 8), 16) / 100).toFixed(2)} m, pump flow ${(parseInt(r.slice(8, 12), 16) / 10).toFixed(1)} L/s`);
    });
  }, 250);
  stack.push(() => {
    clearInterval(scadaTimer);
    scada.close();
  });

  const third = (o.duration * 1000) / 3;
  await sleep(third / 2);
  // An intruder on the plant network (an address no identity rule names) tries what the policy
  // forbids, and a smuggling frame.
  const rpm = () => plant.plc.holding[100]!;
  const before = rpm();
  const intruder = await DemoClient.connect(proxyPort, INTRUDER);
  say(`[intruder] connects from ${INTRUDER}, an address the policy does not know`);
  tell("intruder", "write 9999 rpm to the pump speed setpoint (holding 100)", "intruder_write", answer(await intruder.request(1, "06 0064 270f")));
  tell("intruder", "diagnostics: force listen-only mode (FC 8/4)", "intruder_diagnostics", answer(await intruder.request(1, "08 0004 0000")));
  // libmodbus #514: a write hidden behind a read in one MBAP frame.
  const smuggled = answer(await intruder.raw(Buffer.from("000100000009010300000001060064270f", "hex")));
  tell("intruder", "a read with a write smuggled after it (libmodbus #514)", "intruder_smuggle", `${smuggled}${intruder.sock.destroyed && smuggled !== "closed" ? ", connection closed" : ""}; the setpoint is ${rpm() === before ? `unchanged (${rpm()} rpm)` : `CHANGED to ${rpm()} rpm`}`);
  intruder.close();
  await sleep(third / 2);

  await broker.pause();
  const outageStart = Date.now();
  say(`[demo] broker DOWN: the gateway keeps recording into its outbox`);
  await sleep(third / 3);
  // The engineer changes the pump speed: refused without a write window, allowed in one.
  const eng = await DemoClient.connect(proxyPort, ENGINEER);
  tell("engineer", "write 1600 rpm to holding 100 without a write window", "engineer_write_no_window", answer(await eng.request(1, "06 0064 0640")));
  await controlCall(loaded.config.control.socket, "window.open", { role: "engineer", minutes: 10, reason: "demo: raise pump speed" });
  tell("engineer", "write window opened; write 1600 rpm to holding 100", "engineer_write", answer(await eng.request(1, "06 0064 0640")));
  eng.close();
  await sleep((2 * third) / 3);
  const depth = rt.outbox.stats().depth;
  await broker.resume();
  const outage = (Date.now() - outageStart) / 1000;
  say(`[demo] broker UP after ${outage.toFixed(1)} s with ${depth} events waiting in the outbox`);

  // A sensor attack: the level reading is spoofed to a value the tank cannot hold.
  // The lie lasts until the gateway's detectors have recorded it (at most 20 s).
  let seen = false;
  const off = rt.recorder.onCommit((envs) => {
    if (envs.some((e) => String(e.ocsf.message).startsWith("Reading outside physical range on L_T1"))) seen = true;
  });
  const spoofedAt = Date.now();
  plant.spoof = 9.87;
  say(`[attack] the PLC's tank level reading is spoofed to 9.87 m (the tank is 6.5 m high)`);
  while (!seen && Date.now() - spoofedAt < 20_000) await sleep(50);
  off();
  tell("gateway", "the spoofed level", "level_spoof", seen ? `detected after ${((Date.now() - spoofedAt) / 1000).toFixed(1)} s` : "NOT detected within 20 s");
  // A meter attack: the feeder's main counter is rolled back by 100 kWh.
  let rolledBack = false;
  const offMeter = rt.recorder.onCommit((envs) => {
    if (envs.some((e) => String(e.ocsf.message).includes("MAIN_kWh counter ran backwards"))) rolledBack = true;
  });
  const rolledAt = Date.now();
  feeder.attack = "rollback";
  say(`[attack] the feeder's main energy counter is rolled back by 100 kWh`);
  while (!rolledBack && Date.now() - rolledAt < 20_000) await sleep(50);
  offMeter();
  tell("gateway", "the rolled-back meter", "meter_rollback", rolledBack ? `detected after ${((Date.now() - rolledAt) / 1000).toFixed(1)} s` : "NOT detected within 20 s");
  await sleep(Math.max(0, third / 2 - (Date.now() - spoofedAt)));
  plant.spoof = undefined;
  await sleep(third / 2);
  clearInterval(scadaTimer);
  scada.close();

  rt.stopSources();
  say(`[demo] sources stopped; letting the gateway drain its outbox`);
  await rt.stop("demo finished", 30_000);
  const committed = rt.recorder.counters.committed;
  // Wait for the receiver to have everything (or give up after 15 s).
  const until = Date.now() + 15_000;
  while (receiver.counters.events < committed && Date.now() < until) await sleep(100);
  await receiver.stop();
  const problems = { ...receiver.problemCounts };
  const verified = receiver.counters.events;
  // Duplicates are expected after an outage (a PUBACK lost with the connection): the SOC
  // de-duplicates them. Anything else is a real problem.
  const ok = verified === committed && Object.keys(problems).every((p) => p === "duplicate");
  const denied = Object.entries(findings.modbus_denied).map(([who, n]) => `${n} for ${who}`).join(", ") || "none";
  say(`[demo] the SOC verified Modbus denials: ${denied}; malformed frames: ${findings.modbus_malformed}; level findings: ${findings.level_out_of_range}; meter findings: ${findings.meter_rollback}`);
  for (const line of outcomeLines(committed, verified, problems, ok)) say(line);
  if (o.keep) say(`[demo] kept ${dir} (SOC output: ${join(socDir, "events.jsonl")})`);
  return { ok, dir, committed, soc_verified: verified, problems, outage_s: Math.round(outage * 10) / 10, outcomes, setpoint_rpm: { before, after: rpm() }, soc_findings: findings };
}

/** Counts what the SOC verified that the demo's attacks should cause. */
function countFinding(f: DemoSummary["soc_findings"], ocsf: Record<string, unknown>): void {
  const msg = String(ocsf.message);
  const actor = (ocsf.actor as { user?: { name?: string } } | undefined)?.user?.name ?? "?";
  // Aggregated denials are one event with a count.
  const n = (ocsf.count as number | undefined) ?? 1;
  if (ocsf.class_uid === 4001 && ocsf.activity_id === 5) f.modbus_denied[actor] = (f.modbus_denied[actor] ?? 0) + n;
  else if (msg.startsWith("Malformed Modbus frame")) f.modbus_malformed += n;
  else if (msg.startsWith("Reading outside physical range on L_T1")) f.level_out_of_range++;
  else if (msg.includes("MAIN_kWh counter ran backwards")) f.meter_rollback++;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const EXCEPTIONS: Record<string, string> = { "01": "illegal function", "02": "illegal data address", "03": "illegal data value" };

function answer(pduHex: string): string {
  if (pduHex === "timeout" || pduHex === "closed") return pduHex;
  const fc = parseInt(pduHex.slice(0, 2), 16);
  const code = pduHex.slice(2, 4);
  return fc & 0x80 ? `denied (exception ${code}${EXCEPTIONS[code] ? ` ${EXCEPTIONS[code]}` : ""})` : `allowed (${pduHex})`;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

/** The demo gateway's proxy, policy, points and detection settings. */
function demoSiteYaml(proxyPort: number, plcPort: number, feederPort: number): string {
  return `
modbus:
  listeners:
    - { name: plant, type: tcp, listen: "127.0.0.1:${proxyPort}" }
  upstreams:
    - { name: plc, type: tcp, target: "127.0.0.1:${plcPort}" }
    - { name: feeder, type: tcp, target: "127.0.0.1:${feederPort}" }
  routes:
    - { unit: 1, upstream: plc }
    - { unit: 2, upstream: feeder, remote_unit: 1 }
  policy:
    identities:
      - { match: { address: ["${SCADA}"] }, role: scada }
      - { match: { address: ["${ENGINEER}"] }, role: engineer }
    roles:
      scada:
        units: [1, 2]
        functions: [read-only]
        read: { input: ["0-399"], holding: ["0-199"] }
      engineer:
        units: [1]
        functions: [read-write]
        read: { input: ["0-99"], holding: ["0-199"] }
        write: { holding: ["100-103"] }
        values:
          - { table: holding, address: "100-103", min: 0, max: 1800 }
        write_window: required
  events: { interval_ms: 2000 }
points:
  L_T1:
    source: { modbus: { device: plc, unit: 1, table: input, address: 30, scale: 0.01 } }
    unit: m
    kind: level
    range: { min: 0, max: 6.5 }
    poll_interval_ms: 500
  F_PU1:
    source: { modbus: { device: plc, unit: 1, table: input, address: 31, scale: 0.1 } }
    unit: L/s
    kind: flow
    range: { min: 0, max: 80 }
  MAIN_kWh:
    source: { modbus: { device: feeder, unit: 1, table: input, address: 0, type: uint32, scale: 0.1 } }
    unit: kWh
    kind: energy_counter
    range: { min: 0, max: 429496729.5 }
    poll_interval_ms: 500
  MAIN_kW:
    source: { modbus: { device: feeder, unit: 1, table: input, address: 2, scale: 0.01 } }
    unit: kW
    kind: power
    range: { min: 0, max: 400 }
    poll_interval_ms: 500
detection:
  close_after: 3
  state_path: data/detectors.db
`;
}

/**
 * The demo's last two lines. A resent copy (a batch whose acknowledgement was lost with the
 * outage, sent again and dropped by the SOC) is at-least-once delivery working: it is named as
 * what it is, apart from the problems.
 */
export function outcomeLines(committed: number, verified: number, problems: Record<string, number>, ok: boolean): [string, string] {
  const resent = problems.duplicate ?? 0;
  const real = Object.entries(problems).filter(([k]) => k !== "duplicate");
  const copies = resent ? ` (and recognised ${resent} resent ${resent === 1 ? "copy" : "copies"} of events it already had: acknowledgements lost with the outage; dropped)` : "";
  return [
    `[demo] gateway committed ${committed} signed events; the SOC verified ${verified}${copies}; problems: ${real.map(([k, v]) => `${k}=${v}`).join(", ") || "none"}`,
    ok ? "[demo] OK: the SOC verified every event once, signed and chained, across the outage." : "[demo] MISMATCH: see the problem lines above.",
  ];
}
