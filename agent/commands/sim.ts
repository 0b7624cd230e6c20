import type { Command } from "commander";
import { stringify } from "yaml";
import { DaemonError } from "../core/errors";
import { listenError } from "../core/listen-error";
import { FEEDER_ATTACKS, FEEDER_LAYOUT, FEEDER_METERS, FeederSim, type FeederAttack } from "../demo/energy";
import { WATER_ATTACKS, WaterSim, type WaterAttack } from "../demo/water";

interface SimOpts {
  listen: string;
  seed: string;
  attack?: string;
  attackAfter: string;
  speed: string;
  printPoints?: boolean;
  device: string;
  json?: boolean;
}

/**
 * `gatewarden sim water|energy`: a pumping station or a street feeder served over Modbus TCP,
 * so a config can be tried before the cabinet. Runs until SIGINT or SIGTERM.
 */
export function registerSim(program: Command): void {
  const sim = program.command("sim").description("Serve a simulated plant over Modbus TCP (try a config before the cabinet)");
  for (const kind of ["water", "energy"] as const) {
    const attacks: readonly string[] = kind === "water" ? WATER_ATTACKS : FEEDER_ATTACKS;
    sim
      .command(kind)
      .description(kind === "water" ? "Pumping station: tank level (input 30, cm), inflow (input 31, L/s x 10), pump speed setpoint (holding 100, rpm)" : "Street feeder: main meter and 3 sub-meters at input registers 0, 100, 200, 300 (kWh, kW, V, A, PF)")
      .option("--listen <HOST:PORT>", "address to serve Modbus TCP on", "127.0.0.1:1502")
      .option("--seed <N>", "seed of the simulator's noise and load patterns", "1")
      .option("--attack <NAME>", `scripted attack: ${attacks.join(", ")}`)
      .option("--attack-after <SECONDS>", "when the attack starts", "30")
      .option("--speed <N>", "simulated seconds per real second (energy)", "1")
      .option("--print-points", "print the points config for this simulator and exit")
      .option("--device <NAME>", "the Modbus upstream name used in --print-points", kind === "water" ? "plc" : "feeder")
      .option("--json", "print the listening address as JSON")
      .action((opts: SimOpts) => runSim(kind, attacks, opts));
  }
}

function parseListen(s: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new DaemonError("USAGE", `--listen ${s}: expected HOST:PORT, e.g. 127.0.0.1:1502`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, "$1"), port };
}

function num(flag: string, s: string, min: number, max: number): number {
  const n = Number(s);
  if (!/^\d+(\.\d+)?$/.test(s) || n < min || n > max) throw new DaemonError("USAGE", `${flag} ${s}: expected a number from ${min} to ${max}`);
  return n;
}

async function runSim(kind: "water" | "energy", attacks: readonly string[], opts: SimOpts): Promise<void> {
  const { host, port } = parseListen(opts.listen);
  const seed = num("--seed", opts.seed, 0, 2 ** 32 - 1);
  const after = num("--attack-after", opts.attackAfter, 0, 86_400 * 365);
  const speed = num("--speed", opts.speed, 0.001, 100_000);
  if (opts.attack !== undefined && !attacks.includes(opts.attack)) throw new DaemonError("USAGE", `--attack ${opts.attack}: ${kind} attacks are ${attacks.join(", ")}`);
  if (opts.printPoints) {
    process.stdout.write(stringify({ points: kind === "water" ? waterPoints(opts.device) : feederPoints(opts.device) }, { aliasDuplicateObjects: false }));
    return;
  }
  const s = kind === "water" ? new WaterSim({ seed }) : new FeederSim({ seed, speed });
  let bound: number;
  try {
    bound = await s.listen(port, host);
  } catch (e) {
    throw listenError(e as NodeJS.ErrnoException, `the ${kind} simulator (--listen)`, opts.listen);
  }
  const addr = `${host}:${bound}`;
  process.stdout.write(opts.json ? JSON.stringify({ simulator: kind, listen: addr, seed, attack: opts.attack ?? null, attack_after_s: after }) + "\n" : `${kind} simulator listening on ${addr} (seed ${seed})${opts.attack ? `; attack ${opts.attack} in ${after} s` : ""}\n`);
  const attackTimer = opts.attack
    ? setTimeout(() => {
        if (s instanceof WaterSim) s.attack = opts.attack as WaterAttack;
        else s.attack = opts.attack as FeederAttack;
        if (!opts.json) process.stdout.write(`attack ${opts.attack} started\n`);
      }, after * 1000)
    : undefined;
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  if (attackTimer) clearTimeout(attackTimer);
  await s.close();
}

function waterPoints(device: string): Record<string, unknown> {
  const src = (table: string, address: number, scale: number) => ({ modbus: { device, unit: 1, table, address, scale } });
  return {
    L_T1: { source: src("input", 30, 0.01), unit: "m", kind: "level", range: { min: 0, max: 6.5 }, poll_interval_ms: 1000 },
    F_PU1: { source: src("input", 31, 0.1), unit: "L/s", kind: "flow", range: { min: 0, max: 80 }, poll_interval_ms: 1000 },
  };
}

function feederPoints(device: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const ranges: Record<string, { min: number; max: number }> = { kWh: { min: 0, max: 429_496_729.5 }, kW: { min: 0, max: 400 }, V: { min: 180, max: 270 }, A: { min: 0, max: 1000 }, "1": { min: 0, max: 1 } };
  FEEDER_METERS.forEach((meter, m) => {
    for (const f of FEEDER_LAYOUT) {
      out[`${meter}_${f.field}`] = {
        source: { modbus: { device, unit: 1, table: "input", address: 100 * m + f.offset, type: f.type, scale: f.scale } },
        unit: f.unit,
        kind: f.kind,
        range: ranges[f.unit],
        poll_interval_ms: 1000,
        ...(f.kind === "energy_counter" ? { rollover_at: 429_496_729.5 } : {}),
      };
    }
  });
  return out;
}
