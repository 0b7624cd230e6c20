/**
 * A seeded simulator of a low-voltage street feeder, for the generalisation protocol of the
 * detectors: one reading a minute of a main meter (energy counter, per-phase voltage, current
 * and power factor, active power) and four sub-meters (energy counters: houses, a shop, street
 * lighting, an EV charger). Normal life includes weather, week shapes, appliance bursts, EV
 * sessions, lighting at dusk, an 8-15 kW load switched on for hours, voltage sags, meter gain
 * errors and resolution, cable losses and unmetered auxiliaries, meter exchanges after 30-90 min
 * offline and single meters offline for hours (blank cells). Attacks (labelled rows): sub-meter
 * tampering, a frozen meter, a replayed day, a counter rollback, a slow drift, a V/I spoof that
 * breaks P = V x I x PF, and a bypass ahead of the sub-meters.
 *
 * Dev seeds are the ones detectors may be tuned on; held-out seeds are only ever reported.
 */
import { prng } from "../helpers/prng";

export const DEV_SEEDS = [101, 102, 103] as const;
export const HELDOUT_SEEDS = [9001, 9002, 9003] as const;

export const MIN = 60_000;
/** Monday 2026-03-02 00:00 UTC. */
export const FEEDER_T0 = Date.UTC(2026, 2, 2);

export const FEEDER_COLUMNS = [
  "E_MAIN", "P_MAIN", "V_L1", "V_L2", "V_L3", "I_L1", "I_L2", "I_L3", "PF_L1", "PF_L2", "PF_L3",
  "HOUSES_kWh", "SHOP_kWh", "LAMPS_kWh", "EV_kWh",
] as const;
export type FeederColumn = (typeof FEEDER_COLUMNS)[number];
const SUBS = ["HOUSES_kWh", "SHOP_kWh", "LAMPS_kWh", "EV_kWh"] as const;

export const ATTACK_KINDS = ["tamper", "frozen", "replay", "rollback", "drift", "spoof", "bypass"] as const;
export type AttackKind = (typeof ATTACK_KINDS)[number];

export interface Attack { kind: AttackKind; from: number; to: number; what: string }

export interface FeederRun {
  seed: number;
  columns: readonly FeederColumn[];
  /** Row timestamps, ms. */
  ts: number[];
  /** values[column][row]; NaN for a blank (offline) cell. */
  values: Record<FeederColumn, Float64Array>;
  /** 1 on attacked rows. */
  label: Uint8Array;
  /** Rows before this index are the learning history (no attacks). */
  split: number;
  attacks: Attack[];
  /** Ordinary events in the live part (exchanges, outages, sags, big loads), for the record. */
  events: string[];
}

export interface FeederOptions {
  learnDays?: number;
  days?: number;
  /** Attack kinds to inject in the live part (default: all seven, once each). */
  attacks?: readonly AttackKind[];
  /** Random ordinary events (exchanges, outages, sags, big loads); default true. */
  ordinary?: boolean;
  /** Ordinary events at given rows (regression scenarios). */
  scenario?: readonly ScenarioEvent[];
}

export type ScenarioEvent =
  | { kind: "load"; at: number; minutes: number; kw: number }
  | { kind: "sag"; at: number; minutes: number; depth: number }
  | { kind: "exchange"; meter: (typeof SUBS)[number]; at: number; offline: number }
  | { kind: "outage"; meter: (typeof SUBS)[number]; at: number; minutes: number };

const q = (x: number, step: number): number => Math.round(x / step) * step;
const floorTo = (x: number, step: number): number => Math.floor(x / step + 1e-9) * step;
const round = (x: number, dec: number): number => Number(x.toFixed(dec));

/** Generates one feeder run. Rows: `days` days at one a minute, the first `learnDays` attack-free. */
export function simulateFeeder(seed: number, o: FeederOptions = {}): FeederRun {
  const learnDays = o.learnDays ?? 7;
  const days = o.days ?? 28;
  const n = days * 1440;
  const split = learnDays * 1440;
  const rnd = prng(seed);
  const ordinary = o.ordinary ?? true;
  const scenario = o.scenario ?? [];
  const gauss = (): number => (rnd() + rnd() + rnd() + rnd() + rnd() + rnd() - 3) / 0.7071;
  const uni = (a: number, b: number): number => a + (b - a) * rnd();
  const int = (a: number, b: number): number => Math.floor(uni(a, b + 1));

  // ---- true loads, kW per minute
  const houses = new Float64Array(n), shop = new Float64Array(n), lamps = new Float64Array(n), ev = new Float64Array(n);
  const events: string[] = [];
  let temp = uni(2, 12);
  let ar = 0;
  const homes = uni(25, 40);
  const shopKw = uni(6, 14);
  const lampKw = uni(1.5, 4);
  const dusk = uni(17.5, 18.5);
  const bursts: number[] = [];
  for (let d = 0; d < days; d++) {
    temp = 0.8 * temp + 0.2 * 8 + 2 * gauss();
    const dow = (d % 7); // 0 = Monday
    const weekend = dow >= 5;
    const heat = Math.max(0, 15 - temp) / 15;
    const lightOn = dusk + 0.15 * gauss();
    const lightOff = 23 + 0.05 * gauss();
    for (let m = 0; m < 1440; m++) {
      const i = d * 1440 + m;
      const h = m / 60;
      const morning = Math.exp(-(((h - (weekend ? 9 : 7.5)) / 1.2) ** 2));
      const evening = Math.exp(-(((h - 19) / 2) ** 2));
      const night = h < 5 ? 0.6 : 1;
      ar = 0.97 * ar + 0.03 * gauss();
      const per = 0.25 * night + 0.35 * morning + 0.75 * evening + 0.1;
      houses[i] = Math.max(0.5, homes * per * (1 + 0.5 * heat) * (1 + 0.25 * ar));
      const open = !weekend || dow === 5 ? h >= 8 && h < 20 : false;
      shop[i] = open ? shopKw * (0.85 + 0.1 * Math.sin(h)) * (1 + 0.02 * gauss()) : 1.2 + 0.05 * gauss();
      lamps[i] = h >= lightOn || h < lightOff - 24 ? lampKw : 0;
      if (h >= lightOn && h < lightOff) lamps[i] = lampKw;
      else lamps[i] = 0;
    }
    // appliance bursts (ovens, kettles, heaters) on the houses
    const nb = int(8, 20);
    for (let b = 0; b < nb; b++) {
      const s = d * 1440 + int(360, 1380);
      const len = int(3, 40);
      const kw = uni(2, 4);
      for (let k = s; k < Math.min(n, s + len); k++) houses[k]! += kw;
      bursts.push(s);
    }
    // EV sessions, 0-2 a day, 7-11 kW for 1-4 h
    const ns = int(0, 2);
    for (let k = 0; k < ns; k++) {
      const s = d * 1440 + int(480, 1320);
      const len = int(60, 240);
      const kw = uni(7, 11);
      for (let j = s; j < Math.min(n, s + len); j++) ev[j] = kw;
    }
    // now and then an 8-15 kW load switched on for hours (a workshop, a heat pump)
    if (rnd() < 0.3 && ordinary) {
      const s = d * 1440 + int(360, 1080);
      const len = int(120, 300);
      const kw = uni(8, 15);
      for (let j = s; j < Math.min(n, s + len); j++) houses[j]! += kw;
      if (d >= learnDays) events.push(`load ${round(kw, 1)} kW for ${len} min at row ${s}`);
    }
  }

  for (const e of scenario) if (e.kind === "load") for (let j = e.at; j < Math.min(n, e.at + e.minutes); j++) houses[j]! += e.kw;

  // ---- the main meter: sum + unmetered auxiliaries + cable losses (I^2 R)
  const aux = uni(0.1, 0.4);
  const lossK = uni(0.015, 0.03) / 60; // share of the load at 60 kW
  const total = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = houses[i]! + shop[i]! + lamps[i]! + ev[i]! + aux;
    total[i] = s + lossK * s * s;
  }

  // ---- phases: how the load divides; voltage with load drop, noise and sags
  const split3 = [uni(0.28, 0.38), uni(0.28, 0.38)];
  const sh = [split3[0]!, split3[1]!, 1 - split3[0]! - split3[1]!];
  const V = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
  const I = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
  const PF = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
  const Pm = new Float64Array(n);
  const sag = new Float64Array(n).fill(1);
  const nSags = ordinary ? int(6, 12) : 0;
  for (const e of scenario) if (e.kind === "sag") for (let j = e.at; j < Math.min(n, e.at + e.minutes); j++) sag[j] = 1 - e.depth;
  for (let k = 0; k < nSags; k++) {
    const s = int(0, n - 20);
    const len = int(1, 6);
    const depth = uni(0.06, 0.2);
    for (let j = s; j < s + len; j++) sag[j] = 1 - depth;
    if (s >= split) events.push(`sag ${round(depth * 100, 0)} % for ${len} min at row ${s}`);
  }
  const vNoise = [0, 0, 0];
  const pfNoise = [0, 0, 0];
  const vNom = uni(229, 236);
  const gainMain = 1 + uni(-0.002, 0.002);
  for (let i = 0; i < n; i++) {
    let p = 0;
    for (let ph = 0; ph < 3; ph++) {
      vNoise[ph] = 0.9 * vNoise[ph]! + 0.3 * gauss();
      pfNoise[ph] = 0.95 * pfNoise[ph]! + 0.003 * gauss();
      const lamp = ph === 0 ? lamps[i]! : 0;
      const pph = (total[i]! - lamps[i]!) * sh[ph]! + lamp;
      const v = (vNom - (0.08 * pph) + vNoise[ph]!) * sag[i]!;
      const motor = (shop[i]! + ev[i]! * 0.2) / (total[i]! + 1);
      const pf = Math.min(0.999, Math.max(0.7, 0.97 - 0.08 * motor + pfNoise[ph]!));
      const a = (pph * 1000) / (v * pf);
      V[ph]![i] = round(q(v, 0.1), 1);
      I[ph]![i] = round(q(a, 0.01), 2);
      PF[ph]![i] = round(q(pf, 0.001), 3);
      p += pph;
    }
    Pm[i] = round(q(p * gainMain, 0.01), 2);
  }

  // ---- counters: gains (meter class), resolution, start values
  const gains = SUBS.map(() => 1 + uni(-0.006, 0.006));
  const loads = [houses, shop, lamps, ev];
  const eMain = new Float64Array(n);
  let acc = uni(1e4, 9e4);
  for (let i = 0; i < n; i++) {
    acc += (total[i]! * gainMain) / 60;
    eMain[i] = acc;
  }
  const trueSub = SUBS.map((_, k) => {
    const out = new Float64Array(n);
    let a = uni(100, 3e4);
    for (let i = 0; i < n; i++) {
      a += (loads[k]![i]! * gains[k]!) / 60;
      out[i] = a;
    }
    return out;
  });

  // ---- live-part timeline: attacks placed apart, then ordinary outages and exchanges between them
  const kinds = o.attacks ?? ATTACK_KINDS;
  const order = [...kinds].sort(() => rnd() - 0.5);
  const label = new Uint8Array(n);
  const attacks: Attack[] = [];
  const live = n - split;
  const slot = Math.floor(live / Math.max(1, order.length));
  const busy: [number, number][] = [];
  order.forEach((kind, k) => {
    const len =
      kind === "tamper" || kind === "bypass" ? int(8 * 60, 30 * 60) :
      kind === "rollback" ? 60 :
      kind === "drift" ? int(12 * 60, 24 * 60) :
      kind === "replay" ? int(6 * 60, 20 * 60) : int(3 * 60, 8 * 60);
    const room = Math.max(1, slot - len - 240);
    const from = split + k * slot + 120 + int(0, room - 1);
    attacks.push({ kind, from, to: Math.min(n - 1, from + len - 1), what: "" });
    busy.push([from - 180, from + len + 180]);
  });

  const values = {} as Record<FeederColumn, Float64Array>;
  values.E_MAIN = eMain;
  values.P_MAIN = Pm;
  V.forEach((v, k) => (values[`V_L${k + 1}` as FeederColumn] = v));
  I.forEach((v, k) => (values[`I_L${k + 1}` as FeederColumn] = v));
  PF.forEach((v, k) => (values[`PF_L${k + 1}` as FeederColumn] = v));
  SUBS.forEach((s, k) => (values[s] = trueSub[k]!));

  // ---- attacks on the (still unquantised) counters and the instantaneous values
  for (const a of attacks) {
    for (let i = a.from; i <= a.to; i++) label[i] = 1;
    const L = a.to - a.from + 1;
    switch (a.kind) {
      case "tamper": {
        const s = SUBS[int(0, 1)]!; // houses or shop: the big ones
        const f = uni(0.6, 0.85);
        a.what = `${s} advances at ${round(f * 100, 0)} % of its load`;
        tamperCounter(values[s], a.from, a.to, n, f);
        break;
      }
      case "frozen": {
        const s = rnd() < 0.5 ? "P_MAIN" : SUBS[int(0, 1)]!;
        a.what = `${s} frozen`;
        for (let i = a.from; i <= a.to; i++) values[s][i] = values[s][a.from]!;
        if (s !== "P_MAIN") {
          // The meter resumes with its true (higher) count: a jump when the attack ends.
        }
        break;
      }
      case "replay": {
        a.what = "P, V, I and PF of the main meter replayed from the same hours a day earlier";
        for (const c of ["P_MAIN", "V_L1", "V_L2", "V_L3", "I_L1", "I_L2", "I_L3", "PF_L1", "PF_L2", "PF_L3"] as const) {
          for (let i = a.from; i <= a.to; i++) values[c][i] = values[c][i - 1440]!;
        }
        break;
      }
      case "rollback": {
        const s = rnd() < 0.5 ? "E_MAIN" : SUBS[int(0, 1)]!;
        const back = uni(5, 50);
        a.what = `${s} set back ${round(back, 1)} kWh`;
        for (let i = a.from; i < n; i++) values[s][i]! -= back;
        break;
      }
      case "drift": {
        const c = (["P_MAIN", "I_L1", "V_L2"] as const)[int(0, 2)]!;
        const to = uni(0.8, 0.88);
        a.what = `${c} drifts to ${round(to * 100, 0)} % of the truth over ${L} min`;
        const dec = c.startsWith("P") || c.startsWith("I") ? 2 : 1;
        for (let i = a.from; i <= a.to; i++) values[c][i] = round(values[c][i]! * (1 - ((1 - to) * (i - a.from)) / L), dec);
        break;
      }
      case "spoof": {
        const ph = int(1, 3);
        const c = (rnd() < 0.5 ? `I_L${ph}` : `V_L${ph}`) as FeederColumn;
        const f = uni(0.6, 0.8);
        a.what = `${c} reported at ${round(f * 100, 0)} %`;
        for (let i = a.from; i <= a.to; i++) values[c][i] = round(values[c][i]! * f, c.startsWith("V") ? 1 : 2);
        break;
      }
      case "bypass": {
        const kw = uni(4, 12);
        a.what = `${round(kw, 1)} kW drawn ahead of the sub-meters`;
        let extra = 0;
        for (let i = a.from; i < n; i++) {
          if (i <= a.to) {
            extra += kw / 60;
            const add = kw / 3;
            for (let ph = 0; ph < 3; ph++) {
              const v = V[ph]![i]!;
              const pf = PF[ph]![i]!;
              I[ph]![i] = round(q(I[ph]![i]! + (add * 1000) / (v * pf), 0.01), 2);
            }
            Pm[i] = round(q(Pm[i]! + kw, 0.01), 2);
          }
          eMain[i]! += extra;
        }
        break;
      }
    }
  }

  // ---- ordinary events in the live part: exchanges after 30-90 min offline, outages of 1-3 h
  const free = (s: number, len: number): boolean => busy.every(([a, b]) => s + len < a || s > b);
  const place = (len: number): number => {
    for (let t = 0; t < 200; t++) {
      const s = int(split + 60, n - len - 60);
      if (free(s, len)) {
        busy.push([s - 60, s + len + 60]);
        return s;
      }
    }
    return -1;
  };
  const blank = (c: FeederColumn, s: number, len: number): void => {
    for (let i = s; i < s + len; i++) values[c][i] = Number.NaN;
  };
  const exchange = (c: FeederColumn, s: number, len: number): void => {
    blank(c, s, len);
    const base = values[c][s + len]!;
    const start = uni(0, 0.5);
    for (let i = s + len; i < n; i++) if (!Number.isNaN(values[c][i]!)) values[c][i] = values[c][i]! - base + start;
  };
  for (const e of scenario) {
    if (e.kind === "exchange") exchange(e.meter, e.at, e.offline);
    if (e.kind === "outage") blank(e.meter, e.at, e.minutes);
  }
  for (let k = 0; k < (ordinary ? 2 : 0); k++) {
    const len = int(30, 90);
    const s = place(len);
    if (s < 0) continue;
    const c = SUBS[int(0, 3)]!;
    exchange(c, s, len);
    events.push(`${c} exchanged after ${len} min offline at row ${s}`);
  }
  for (let k = 0; k < (ordinary ? 2 : 0); k++) {
    const len = int(60, 180);
    const s = place(len);
    if (s < 0) continue;
    const c = SUBS[int(0, 3)]!;
    blank(c, s, len);
    events.push(`${c} offline ${len} min at row ${s}`);
  }

  // ---- resolution of the registers
  for (let i = 0; i < n; i++) {
    values.E_MAIN[i] = round(floorTo(values.E_MAIN[i]!, 0.01), 2);
    for (const s of SUBS) if (!Number.isNaN(values[s][i]!)) values[s][i] = round(floorTo(values[s][i]!, 0.1), 1);
  }
  const ts = Array.from({ length: n }, (_, i) => FEEDER_T0 + i * MIN);
  return { seed, columns: FEEDER_COLUMNS, ts, values, label, split, attacks, events };
}

/** The counter advances at `f` of its true rate over rows [from, to], then normally again (the loss stays). */
function tamperCounter(c: Float64Array, from: number, to: number, n: number, f: number): void {
  const at = c[from]!;
  const lost = (c[to]! - at) * (1 - f);
  for (let i = from; i < n; i++) c[i] = i <= to ? at + (c[i]! - at) * f : c[i]! - lost;
}

/** CSV text (the offline `detect` format) of rows [from, to). */
export function feederCsv(run: FeederRun, from: number, to: number): string {
  const lines = ["timestamp," + run.columns.join(",")];
  for (let i = from; i < to; i++) {
    const t = new Date(run.ts[i]!).toISOString().slice(0, 19).replace("T", " ");
    lines.push(t + "," + run.columns.map((c) => (Number.isNaN(run.values[c][i]!) ? "" : String(run.values[c][i]))).join(","));
  }
  return lines.join("\n") + "\n";
}
