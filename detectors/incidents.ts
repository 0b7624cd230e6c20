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

export interface SignalAlarmState {
  open: Incident | null;
  /** Consecutive anomalous ticks while closed; consecutive quiet ticks while open. */
  streak: number;
  /** Threshold multiplier raised when the budget is exceeded; decays back to 1. */
  mult: number;
  mult_ts: number;
  /** False-alarm budget: tokens left (a token bucket refilled at `budget_per_day`). */
  tokens: number;
  tokens_ts: number;
  seq: number;
  /**
   * Highest peak score of the signal's recent statistical incidents (halving every budget
   * interval, like the multiplier): beyond the budget, only an anomaly stronger than the recent
   * ones opens an incident.
   */
  last_peak?: number;
  peak_ts?: number;
}

export type Transition = { kind: "open" | "update" | "close"; incident: Incident } | null;

export interface AlarmOptions {
  open_after: number;
  close_after: number;
  budget_per_day: number;
}

export function newSignalState(): SignalAlarmState {
  return { open: null, streak: 0, mult: 1, mult_ts: 0, tokens: -1, tokens_ts: 0, seq: 0 };
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
  // The budget multiplier halves every budget interval (1 / budget_per_day days) back to 1.
  if (st.mult > 1) {
    st.mult = Math.max(1, st.mult * Math.pow(0.5, (Math.max(0, ts - st.mult_ts) * o.budget_per_day) / DAY));
    st.mult_ts = ts;
  }
  if (st.last_peak !== undefined && st.peak_ts !== undefined) {
    st.last_peak *= Math.pow(0.5, (Math.max(0, ts - st.peak_ts) * o.budget_per_day) / DAY);
    st.peak_ts = ts;
  }
  let top: Finding | null = null;
  for (const f of findings) {
    const need = unbudgeted(f) ? 1 : st.mult;
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
      // refilled at budget_per_day. Without a token the signal's threshold doubles (decaying
      // back over the budget interval) and this opening must clear it too. A self-limiting
      // finding (novelty) takes a token when there is one, so it counts against the weaker
      // statistics that follow, but is never held back for lack of one.
      const cap = Math.max(2, o.budget_per_day);
      if (st.tokens < 0) {
        st.tokens = cap;
        st.tokens_ts = ts;
      }
      st.tokens = Math.min(cap, st.tokens + (Math.max(0, ts - st.tokens_ts) * o.budget_per_day) / DAY);
      st.tokens_ts = ts;
      if (unbudgeted(top)) {
        if (st.tokens >= 1) st.tokens -= 1;
      } else if (st.tokens < 1) {
        // Out of budget: the threshold doubles, and rises to the recent incidents' peak if that
        // is higher, so recurring anomalies weaker than those (a spike pattern that is this
        // signal's normal) stay quiet while a stronger one still opens.
        st.mult = Math.max(st.mult * 2, st.last_peak ?? 0);
        st.mult_ts = ts;
        if (top.score < st.mult) {
          st.streak = 0;
          return null;
        }
      } else {
        st.tokens -= 1;
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
        st.last_peak = Math.max(st.last_peak ?? 0, inc.peak);
        st.peak_ts = ts;
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

function rank(f: Finding): number {
  return (f.strength === "physical" ? 1000 : 0) + Math.min(f.score, 999);
}
