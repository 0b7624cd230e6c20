/**
 * Event-wise scoring of flagged rows against labels, as the team's standard scorer defines it:
 * an event is a run of labelled rows, an alarm segment a run of flagged rows (a gap of one row
 * joins two); event recall = events with a flag inside, event precision = alarm segments that
 * touch an event; TNR = share of normal rows left unflagged.
 */
export interface EventScore {
  events: number;
  detected: number;
  segments: number;
  segmentsOnEvents: number;
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

export function eventScore(label: ArrayLike<number>, flagged: ArrayLike<boolean | number>, from = 0): EventScore {
  const s: EventScore = { events: 0, detected: 0, segments: 0, segmentsOnEvents: 0, tp: 0, fp: 0, tn: 0, fn: 0 };
  const n = label.length;
  let inEvent = false;
  let hit = false;
  for (let i = from; i < n; i++) {
    const l = label[i]! > 0;
    const f = Boolean(flagged[i]);
    if (l && f) s.tp++;
    else if (l) s.fn++;
    else if (f) s.fp++;
    else s.tn++;
    if (l && !inEvent) {
      inEvent = true;
      hit = false;
      s.events++;
    }
    if (l && f) hit = true;
    if (inEvent && (!l || i === n - 1)) {
      if (hit) s.detected++;
      inEvent = false;
    }
  }
  let i = from;
  while (i < n) {
    if (!flagged[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < n && (flagged[j + 1] || (j + 2 < n && flagged[j + 2]))) j += flagged[j + 1] ? 1 : 2;
    s.segments++;
    let touches = false;
    for (let k = i; k <= j; k++) if (label[k]! > 0) touches = true;
    if (touches) s.segmentsOnEvents++;
    i = j + 1;
  }
  return s;
}

export function addScores(a: EventScore, b: EventScore): EventScore {
  const out = { ...a };
  for (const k of Object.keys(b) as (keyof EventScore)[]) out[k] += b[k];
  return out;
}

export function figures(s: EventScore): { f1: number; precision: number; recall: number; tnr: number } {
  const precision = s.segments ? s.segmentsOnEvents / s.segments : 0;
  const recall = s.events ? s.detected / s.events : 0;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { f1, precision, recall, tnr: s.tn + s.fp ? s.tn / (s.tn + s.fp) : 1 };
}
