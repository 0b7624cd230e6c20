/**
 * Requests and policies described on a command line: a preset policy, an upstream URL, and a
 * request from `policy test` flags. Bad input is a USAGE error naming the flag.
 */
import { DaemonError } from "../../agent/core/errors";
import { modbusConfigSchema, type UpstreamConfig } from "./config";
import { PRESETS, type PresetName } from "./codec/function-codes";
import { encodeRequest, parseRequest, type ModbusRequest } from "./codec/pdu";
import { zodMessage, type PolicyInput } from "./policy/schema";

/** A policy letting any client use a preset on every unit and address. */
export function presetPolicy(preset: PresetName): PolicyInput {
  const all = ["0-65535"];
  const writes = PRESETS[preset].some((f) => [5, 6, 15, 16, 21, 22, 23].includes(f));
  return {
    identities: [{ match: { address: ["0.0.0.0/0", "::/0"], transport: "any" }, role: preset }],
    roles: {
      [preset]: {
        units: ["0-255"],
        functions: [preset],
        read: { coil: all, discrete_input: all, input: all, holding: all, file: [{ file: 1, records: "0-9999" }] },
        ...(writes ? { write: { coil: all, holding: all } } : {}),
      },
    },
  };
}

/** `tcp://HOST:PORT`, `rtu-tcp://HOST:PORT`, `rtu:DEVICE?baud=N&parity=even`. */
export function parseUpstreamUrl(url: string): UpstreamConfig {
  const raw = (() => {
    let m = /^tcp:\/\/([^/]+:\d+)\/?$/.exec(url);
    if (m) return { name: "upstream", type: "tcp", target: m[1] };
    m = /^rtu-tcp:\/\/([^/?]+:\d+)\/?(?:\?(.*))?$/.exec(url);
    if (m) return { name: "upstream", type: "rtu_tcp", target: m[1], ...query(m[2]) };
    m = /^rtu:([^?]+)(?:\?(.*))?$/.exec(url);
    if (m) return { name: "upstream", type: "rtu", device: m[1], ...query(m[2]) };
    throw new DaemonError("USAGE", `--upstream ${url}: expected tcp://HOST:PORT, rtu-tcp://HOST:PORT or rtu:DEVICE?baud=N`);
  })();
  const r = modbusConfigSchema.shape.upstreams.unwrap().element.safeParse(raw);
  if (!r.success) throw new DaemonError("USAGE", `--upstream ${url}: ${zodMessage(r.error)}`);
  return r.data;
}

function query(q: string | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of new URLSearchParams(q ?? "")) {
    const key = k === "baud" ? "baud" : k.replace(/-/g, "_");
    out[key] = /^\d+$/.test(v) ? Number(v) : v;
  }
  return out;
}

/** A non-negative integer flag value (decimal or 0x hex) no larger than `max`; USAGE otherwise. */
export function intArg(name: string, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^(0x[0-9a-f]+|\d+)$/i.test(v) || !Number.isInteger(n) || n < 0 || n > max) throw new DaemonError("USAGE", `${name} must be an integer in 0..${max}`);
    return n;
  };
}
const int = intArg;

/** Build a request from `policy test` flags. */
export function describeRequest(o: { function?: number; pdu?: string; address?: number; quantity?: number; values?: string; sub?: number }): ModbusRequest {
  let pdu: Buffer;
  if (o.pdu) pdu = Buffer.from(o.pdu.replace(/\s+/g, ""), "hex");
  else {
    if (o.function === undefined) throw new DaemonError("USAGE", "give --function (with --address/--quantity/--values) or --pdu");
    const fc = o.function;
    const a = o.address ?? 0;
    const values = o.values ? o.values.split(",").map((v) => int("--values", 0xffff)(v.trim())) : [];
    const q = o.quantity ?? (values.length || 1);
    const req = ((): ModbusRequest => {
      switch (fc) {
        case 1:
        case 2:
        case 3:
        case 4:
          return { fc, address: a, quantity: q };
        case 5:
          return { fc, address: a, value: values[0] ? 1 : 0 };
        case 6:
          return { fc, address: a, value: values[0] ?? 0 };
        case 15:
          return { fc, address: a, values: values.map((v) => (v ? 1 : 0)) };
        case 16:
          return { fc, address: a, values };
        case 8:
          return { fc, sub: o.sub ?? 0, data: [0, 0] };
        case 7:
        case 11:
        case 12:
        case 17:
          return { fc };
        case 24:
          return { fc, address: a };
        case 43:
          return { fc, meiType: 14, readCode: 1, objectId: 0 };
        default:
          throw new DaemonError("USAGE", `describe function ${fc} with --pdu HEX`);
      }
    })();
    pdu = encodeRequest(req);
  }
  const p = parseRequest(pdu);
  if (!p.ok) throw new DaemonError("MODBUS_FRAME", `the described request is not valid Modbus: ${p.reason}`);
  return p.req;
}
