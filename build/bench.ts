/**
 * `npm run bench`: every figure next to the physical limit measured in the same run.
 * Sections: spine (outbox accept, drain, bytes/event, RSS), wear (bytes written per event at
 * 1, 20 and 2,000 events/s), modbus (proxy vs blind pipe),
 * detectors (readings/s per core, state bytes per signal), receiver (messages/s vs the disk's
 * fsyncs/s, hostile messages' time and memory), opcua (reads and subscriptions through the
 * front vs directly against the legacy server), footprint (RSS of the daemon without OPC UA and
 * of its OPC UA process with a 200-node front). `npm run bench -- spine` runs one.
 */
import { cpus } from "node:os";
import { benchSpine } from "./bench-spine";
import { benchWear } from "./bench-wear";
import { benchModbus } from "./bench-modbus";
import { benchDetectors } from "./bench-detectors";
import { benchReceiver } from "./bench-receiver";
import { loadModbus } from "./load-modbus";


async function main(): Promise<void> {
  const only = process.argv[2];
  const out: Record<string, unknown> = {
    machine: `${cpus().length} x ${cpus()[0]?.model ?? "?"}, Node ${process.version}`,
    date: new Date().toISOString(),
  };
  if (only === "load-modbus") {
    // `npm run load:modbus`: flood + 1,000 idle connections while a reference client polls.
    out.load_modbus = await loadModbus();
  } else {
    if (!only || only === "spine") out.spine = await benchSpine();
    if (!only || only === "wear") out.wear = await benchWear();
    if (!only || only === "modbus") out.modbus = await benchModbus();
    if (!only || only === "detectors") out.detectors = await benchDetectors();
    if (!only || only === "receiver") out.receiver = await benchReceiver();
    // node-opcua loads only for this section (it would weigh on the spine's RSS figure).
    if (!only || only === "opcua") out.opcua = await (await import("./bench-opcua")).benchOpcua();
    // The real daemon's RSS without OPC UA, and its OPC UA process's with a 200-node front.
    if (!only || only === "footprint") out.footprint = await (await import("./bench-footprint")).benchFootprint();
  }
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
}

const run = (p: Promise<void>) =>
  p.then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench failed: ${String(e)}\n`);
      process.exit(1);
    },
  );
// The OPC UA benchmark's load side, and the Modbus one's daemon proxy as a process of its own,
// run this file again as child processes, until killed.
if (process.argv[2] === "modbus-proxy-process") void import("./bench-modbus").then((m) => m.modbusProxyProcess(process.argv.slice(3)));
else if (process.argv[2] === "opcua-device") void import("./bench-opcua-peer").then((m) => m.opcuaDevice());
else if (process.argv[2] === "opcua-clients") void import("./bench-opcua-peer").then((m) => m.opcuaClients());
else void run(main());
