import { SimDevice } from "./sim-server";
import { prng } from "./prng";

/**
 * A low-voltage street feeder served over Modbus TCP (unit 1, input registers): a main meter
 * and three sub-meters (street lighting, shops, an EV charger), each with an energy counter
 * (0.1 kWh resolution), power, three phase voltages and currents, and a power factor. Loads
 * follow day and week shapes with seeded noise; the main meter sees the sub-meters plus line
 * losses and the cabinet's auxiliaries. Simulated time runs `speed` times faster than real time.
 */
export const FEEDER_ATTACKS = ["meter-tamper", "freeze-meter", "replay-meter", "rollback"] as const;
export type FeederAttack = (typeof FEEDER_ATTACKS)[number];

export const FEEDER_METERS = ["MAIN", "LIGHTS", "SHOPS", "EV"] as const;

/** Register layout of meter m (0 = main) at base 100*m; every value is an unsigned integer. */
export const FEEDER_LAYOUT = [
  { field: "kWh", offset: 0, type: "uint32", scale: 0.1, unit: "kWh", kind: "energy_counter" },
  { field: "kW", offset: 2, type: "uint16", scale: 0.01, unit: "kW", kind: "power" },
  { field: "V1", offset: 3, type: "uint16", scale: 0.1, unit: "V", kind: "voltage" },
  { field: "V2", offset: 4, type: "uint16", scale: 0.1, unit: "V", kind: "voltage" },
  { field: "V3", offset: 5, type: "uint16", scale: 0.1, unit: "V", kind: "voltage" },
  { field: "I1", offset: 6, type: "uint16", scale: 0.1, unit: "A", kind: "current" },
  { field: "I2", offset: 7, type: "uint16", scale: 0.1, unit: "A", kind: "current" },
  { field: "I3", offset: 8, type: "uint16", scale: 0.1, unit: "A", kind: "current" },
  { field: "PF", offset: 9, type: "uint16", scale: 0.001, unit: "1", kind: "power_factor" },
] as const;

interface MeterState {
  kWh: number;
  kW: number;
  v: [number, number, number];
  pf: number;
}

export class FeederSim {
  readonly device = new SimDevice();
  /** Simulated time, ms since the Unix epoch. */
  now: number;
  attack: FeederAttack | undefined;
  private readonly rand: () => number;
  private readonly meters: MeterState[] = FEEDER_METERS.map(() => ({ kWh: 0, kW: 0, v: [230, 230, 230], pf: 0.95 }));
  private evUntil = 0;
  private evKw = 0;
  private frozen: Uint16Array | undefined;
  private readonly history: Uint16Array[] = [];
  private replayAt = 0;
  private timer: NodeJS.Timeout | undefined;

  private readonly speed: number;

  constructor(o: { seed: number; start?: number; speed?: number }) {
    this.rand = prng(o.seed);
    this.now = o.start ?? Date.now();
    this.speed = o.speed ?? 1;
    for (const m of this.meters) m.kWh = 5000 + Math.floor(this.rand() * 20_000);
  }

  async listen(port = 0, host = "127.0.0.1", tickMs = 1000): Promise<number> {
    this.step(0);
    const p = await this.device.listen(port, host);
    this.timer = setInterval(() => this.step(tickMs * this.speed), tickMs);
    return p;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.device.close();
  }

  /** What each load draws now (kW), from the simulated local time. */
  private loads(): [number, number, number] {
    const d = new Date(this.now);
    const h = d.getUTCHours() + d.getUTCMinutes() / 60;
    const weekday = d.getUTCDay() >= 1 && d.getUTCDay() <= 5;
    const noise = () => (this.rand() - 0.5) * 0.1;
    const lights = (h >= 17 && h < 23) || (h >= 5 && h < 7) ? 4.5 * (1 + noise() * 0.2) : 0.05;
    const open = weekday ? h >= 8 && h < 20 : h >= 10 && h < 16;
    const shops = (open ? 22 + 6 * Math.sin(((h - 8) / 12) * Math.PI) : 3) * (1 + noise());
    if (this.now >= this.evUntil && this.rand() < 0.002) {
      this.evKw = 7 + this.rand() * 4;
      this.evUntil = this.now + (30 + this.rand() * 120) * 60_000;
    }
    const ev = this.now < this.evUntil ? this.evKw : 0;
    return [lights, Math.max(0, shops), ev];
  }

  /** Advances simulated time by `dtMs` and refreshes the registers. */
  step(dtMs: number): void {
    this.now += dtMs;
    const [lights, shops, ev] = this.loads();
    const subs = [lights, shops, ev];
    const total = subs.reduce((a, b) => a + b, 0);
    const main = total * 1.02 + 0.4; // line losses and the cabinet's auxiliaries
    const sag = 1 - Math.min(0.04, total / 2500);
    const kws = [main, ...subs];
    const pfs = [0.96, 0.93, 0.9, 0.99];
    kws.forEach((kw, i) => {
      const m = this.meters[i]!;
      m.kW = kw;
      m.kWh += (kw * dtMs) / 3_600_000;
      m.pf = pfs[i]! + (this.rand() - 0.5) * 0.01;
      for (let ph = 0; ph < 3; ph++) m.v[ph] = 230 * sag * (1 + (this.rand() - 0.5) * 0.004);
    });
    this.write();
  }

  private write(): void {
    const regs = this.device.input;
    this.meters.forEach((m, i) => {
      const base = 100 * i;
      const tampered = this.attack === "meter-tamper" && i === 2 ? 0.7 : 1;
      const kWh = Math.floor(m.kWh * 10);
      const shownKwh = tampered !== 1 ? this.tamperedCounter(kWh) : kWh;
      regs[base] = (shownKwh >>> 16) & 0xffff;
      regs[base + 1] = shownKwh & 0xffff;
      regs[base + 2] = Math.round(m.kW * tampered * 100) & 0xffff;
      for (let ph = 0; ph < 3; ph++) {
        regs[base + 3 + ph] = Math.round(m.v[ph]! * 10);
        regs[base + 6 + ph] = Math.round(((m.kW * tampered * 1000) / 3 / (m.v[ph]! * m.pf)) * 10);
      }
      regs[base + 9] = Math.round(m.pf * 1000);
    });
    this.applyReadingAttacks();
  }

  private tamperStart: number | undefined;
  /** A tampered meter counts 70 % of what passes it from the moment the attack starts. */
  private tamperedCounter(trueCounter: number): number {
    this.tamperStart ??= trueCounter;
    return Math.floor(this.tamperStart + (trueCounter - this.tamperStart) * 0.7);
  }

  private applyReadingAttacks(): void {
    const regs = this.device.input;
    const sub1 = regs.subarray(100, 110);
    if (this.attack === "freeze-meter") {
      this.frozen ??= Uint16Array.from(sub1);
      sub1.set(this.frozen);
    } else if (this.attack === "replay-meter") {
      // Plays back what sub-meter 1 showed before the attack, over and over.
      if (this.history.length) {
        sub1.set(this.history[this.replayAt % this.history.length]!);
        this.replayAt++;
      }
    } else {
      this.history.push(Uint16Array.from(sub1));
      if (this.history.length > 3600) this.history.shift();
    }
    if (this.attack === "rollback") {
      const c = Math.max(0, regs[0]! * 65536 + regs[1]! - 1000); // 100 kWh back
      regs[0] = (c >>> 16) & 0xffff;
      regs[1] = c & 0xffff;
    }
  }
}
