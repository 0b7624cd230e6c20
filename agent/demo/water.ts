import { DemoPlant } from "./plant";
import { prng } from "./prng";

/**
 * The demo's pumping station as a standalone simulator (unit 1): tank level at input 30 (cm),
 * inflow at input 31 (L/s x 10), pump speed setpoint at holding 100 (rpm). Readings carry
 * seeded noise of about a centimetre. Attacks change what the PLC holds or reports, as an
 * attacker on the device side (bypassing the gateway) would.
 */
export const WATER_ATTACKS = ["setpoint-write", "spoof-level", "freeze-level", "replay-level"] as const;
export type WaterAttack = (typeof WATER_ATTACKS)[number];

export class WaterSim {
  readonly plant = new DemoPlant();
  attack: WaterAttack | undefined;
  private readonly rand: () => number;
  private readonly history: number[] = [];
  private replayAt = 0;
  private frozen: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(o: { seed: number }) {
    this.rand = prng(o.seed);
  }

  async listen(port = 0, host = "127.0.0.1"): Promise<number> {
    await this.plant.start(port, host);
    // The plant steps itself; this tick adds noise and the attack on top of its registers.
    this.timer = setInterval(() => this.tick(), 100);
    return this.plant.port;
  }

  tick(): void {
    const level = this.plant.trueLevel + (this.rand() - 0.5) * 0.02;
    switch (this.attack) {
      case "setpoint-write":
        this.plant.plc.holding[100] = 3000; // twice the pump's rated speed
        this.plant.spoof = undefined;
        break;
      case "spoof-level":
        this.plant.spoof = 9.87; // beyond the 6.5 m tank
        break;
      case "freeze-level":
        this.frozen ??= level;
        this.plant.spoof = this.frozen;
        break;
      case "replay-level":
        this.plant.spoof = this.history.length ? this.history[this.replayAt++ % this.history.length] : level;
        break;
      default:
        this.plant.spoof = level;
        this.history.push(level);
        if (this.history.length > 3000) this.history.shift();
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.plant.stop();
  }
}
