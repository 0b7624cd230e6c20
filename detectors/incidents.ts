/**
 * Alarm hygiene for one signal: findings become incidents that open, update and close, with
 * hysteresis and a false-alarm budget. Pure state machine; the engine turns transitions into events.
 */
import type { Finding } from "./detector";
import type { SeverityId } from "../agent/core/events";

export interface Incident {
  uid: string;
  point: string;
  opened: number;
  last: number;
  peak: number;
  severity: SeverityId;
  detectors: string[];
  /** The strongest finding so far (its reason is the incident's explanation). */
  top: Finding;
  /** Identity of an allowed write the anomaly follows, if any. */
  identity: string | null;
  ticks: number;
}

/** A false-alarm budget: a token bucket of statistical incidents and the threshold multiplier raised when it is spent. */
export interface AlarmBudget {
  /** Threshold multiplier raised when the budget is exceeded; decays back to 1. */
  mult: number;
  mult_ts: number;
  /** False-alarm budget: tokens left (a token bucket refilled at `budget_per_day`). */
  tokens: number;
  tokens_ts: number;
  /**
   * Highest peak score of the recent statistical incidents it paid for (halving every budget
   * interval, like the multiplier): beyond the budget, only an anomaly stronger than the recent
   * ones opens an incident.
   */
  last_peak?: number;
  peak_ts?: number;
}

/**
 * One signal's alarm state. Its own budget fields count every statistical incident of the signal
 * and judge frozen-sensor findings; `moves` counts the incidents about the signal's moves (all
 * but frozen-sensor ones) and judges those: a run of identical readings says nothing about
 * whether a move is normal for the signal, so frozen-sensor incidents never hold back a shift,
 * drift or group finding.
 */
export interface SignalAlarmState extends AlarmBudget {
  /** Absent in older snapshots and until the signal's first finding about its moves. */
  moves?: AlarmBudget;
  open: Incident | null;
  /** Consecutive anomalous ticks while closed; consecutive quiet ticks while open. */
  streak: number;
  seq: number;
}

export type Transition = { kind: "open" | "update" | "close"; incident: Incident } | null;

export interface AlarmOptions {
  open_after: number;
  close_after: number;
  budget_per_day: number;
}

export function newSignalState(): SignalAlarmState {
  return { open: null, streak: 0, ...newBudget(), seq: 0 };
}

export function newBudget(): AlarmBudget {
  return { mult: 1, mult_ts: 0, tokens: -1, tokens_ts: 0 };
}

const DAY = 86_400_000;

/**
 * Findings outside the false-alarm budget: physical evidence, and detectors whose alarms are
 * self-limiting by construction (novelty: each alarm widens the signal's historical envelope, so
 * a signal cannot keep alarming without setting ever further records).
 */
function unbudgeted(f: Finding): boolean {
  return f.strength === "physical" || f.detector === "novelty";
}

export function severityOf(f: Finding, correlated: boolean): SeverityId {
  // A statistical finding the site physics judged: low when the relations hold, high when the
  // point's relation is broken; otherwise by its score.
  let s: number = f.strength === "physical" || f.consistent === false ? 4 : f.consistent === true || f.score < 2 ? 2 : f.score < 4 ? 3 : 4;
  if (correlated) s++;
  return Math.min(5, s) as SeverityId;
}

/**
 * Advances one signal by one tick. `findings` are this tick's findings for the signal (any
 * order). Returns the transition to report, if any.
 */
export function stepSignal(
  st: SignalAlarmState, point: string, ts: number, findings: readonly Finding[], o: AlarmOptions,
  correlate: (point: string, ts: number) => string | null,
): Transition {
  const budget = (f: Finding): AlarmBudget => {
    const b = f.detector === "stuck" ? st : (st.moves ??= newBudget());
    decay(b, ts, o);
    return b;
  };
  let top: Finding | null = null;
  for (const f of findings) {
    const need = unbudgeted(f) ? 1 : budget(f).mult;
    if (f.score < need) continue;
    if (top === null || rank(f) > rank(top)) top = f;
  }
  const inc = st.open;
  if (inc === null) {
    if (top === null) {
      st.streak = 0;
      return null;
    }
    st.streak++;
    if (top.strength !== "physical" && st.streak < o.open_after) return null;
    if (top.strength !== "physical") {
      // False-alarm budget: a token bucket of max(2, budget_per_day) statistical incidents,
      // refilled at budget_per_day. Without a token the budget's threshold doubles (decaying
      // back over the budget interval) and this opening must clear it too. A self-limiting
      // finding (novelty) takes a token when there is one, so it counts against the weaker
      // statistics that follow, but is never held back for lack of one.
      // A finding about the signal's moves is judged by the budget of those (see SignalAlarmState)
      // and takes a token from the signal's whole budget too, when there is one.
      const b = budget(top);
      refill(b, ts, o);
      if (b !== st) {
        refill(st, ts, o);
        if (st.tokens >= 1) st.tokens -= 1;
      }
      if (unbudgeted(top)) {
        if (b.tokens >= 1) b.tokens -= 1;
      } else if (b.tokens < 1) {
        // Out of budget: the threshold doubles, and rises to the recent incidents' peak if that
        // is higher, so recurring anomalies weaker than those (a spike pattern that is this
        // signal's normal) stay quiet while a stronger one still opens.
        b.mult = Math.max(b.mult * 2, b.last_peak ?? 0);
        b.mult_ts = ts;
        if (top.score < b.mult) {
          st.streak = 0;
          return null;
        }
      } else {
        b.tokens -= 1;
      }
    }
    const identity = correlate(point, ts);
    st.seq++;
    st.streak = 0;
    st.open = {
      uid: `${point}:${ts}:${st.seq}`, point, opened: ts, last: ts, peak: top.score,
      severity: severityOf(top, identity !== null), detectors: [...new Set(findings.map((f) => f.detector))].sort(),
      top, identity, ticks: 1,
    };
    return { kind: "open", incident: st.open };
  }
  inc.ticks++;
  if (top === null) {
    st.streak++;
    if (st.streak >= o.close_after) {
      if (!unbudgeted(inc.top)) {
        for (const b of new Set([st, budget(inc.top)])) {
          b.last_peak = Math.max(b.last_peak ?? 0, inc.peak);
          b.peak_ts = ts;
        }
      }
      st.open = null;
      st.streak = 0;
      return { kind: "close", incident: inc };
    }
    return null;
  }
  st.streak = 0;
  inc.last = ts;
  let changed = false;
  for (const f of findings) {
    if (!inc.detectors.includes(f.detector)) {
      inc.detectors = [...inc.detectors, f.detector].sort();
      changed = true;
    }
  }
  if (rank(top) > rank(inc.top)) inc.top = top;
  inc.peak = Math.max(inc.peak, top.score);
  const sev = severityOf(top, inc.identity !== null);
  if (sev > inc.severity) {
    inc.severity = sev;
    changed = true;
  }
  return changed ? { kind: "update", incident: inc } : null;
}

/** Tokens refilled at budget_per_day up to max(2, budget_per_day) (a fresh bucket starts full). */
function refill(b: AlarmBudget, ts: number, o: AlarmOptions): void {
  const cap = Math.max(2, o.budget_per_day);
  if (b.tokens < 0) {
    b.tokens = cap;
    b.tokens_ts = ts;
  }
  b.tokens = Math.min(cap, b.tokens + (Math.max(0, ts - b.tokens_ts) * o.budget_per_day) / DAY);
  b.tokens_ts = ts;
}

/** The multiplier and the recent peak halve every budget interval (1 / budget_per_day days). */
function decay(b: AlarmBudget, ts: number, o: AlarmOptions): void {
  if (b.mult > 1) {
    b.mult = Math.max(1, b.mult * Math.pow(0.5, (Math.max(0, ts - b.mult_ts) * o.budget_per_day) / DAY));
    b.mult_ts = ts;
  }
  if (b.last_peak !== undefined && b.peak_ts !== undefined) {
    b.last_peak *= Math.pow(0.5, (Math.max(0, ts - b.peak_ts) * o.budget_per_day) / DAY);
    b.peak_ts = ts;
  }
}

function rank(f: Finding): number {
  return (f.strength === "physical" ? 1000 : 0) + Math.min(f.score, 999);
}
