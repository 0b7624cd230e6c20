import { MAX_BATCH_PLAINTEXT } from "../events/seal";

/**
 * What the receiver does per message is bounded, whatever a sender puts in it. Anyone with
 * publish rights can send a well-sealed message (the SOC's sealing key is public), so these
 * hold before anything is verified. A legitimate gateway stays far inside them: its batches
 * hold at most `upstream.max_batch_events` (≤ 10,000) events and `upstream.max_message_bytes`
 * (≤ MAX_BATCH_PLAINTEXT) of plaintext.
 */
export const RECEIVER_LIMITS = {
  /** Plaintext of one batch, compressed or not (inflation stops there). */
  plaintextBytes: MAX_BATCH_PLAINTEXT,
  eventsPerBatch: 10_000,
  /** One event's JSON text. */
  eventBytes: 4 * 1024 * 1024,
  /** Nesting of arrays and objects inside one event (the envelope itself is level 1). */
  depth: 32,
  /** Problem lines written for one message; one more line summarises the rest. */
  problemLinesPerMessage: 64,
  /** Events of one batch failing their hash or signature before the rest is not checked. */
  badEventsPerBatch: 16,
  /**
   * Messages a shared-subscription member holds unacknowledged while they wait for a key
   * rotation another member received: per device, in all, and their bytes. Past these a
   * message is judged at once.
   */
  heldPerDevice: 64,
  heldMessages: 1024,
  heldBytes: 64 * 1024 * 1024,
  /** Longest sender-supplied text copied into a problem line's detail. */
  detailChars: 200,
} as const;

export type Split = { ok: true; count: number; element: (i: number) => string } | { ok: false; reason: string };

const WS = new Uint8Array(256);
for (const c of [0x20, 0x09, 0x0a, 0x0d]) WS[c] = 1;

/**
 * Splits a batch's JSON array text into its elements' texts without parsing them, in one pass
 * over the bytes: nesting depth, element count and element size are checked as it goes, so a
 * hostile batch is refused after bounded work. Each element is later parsed by itself (and only
 * after its whole batch passed), where JSON.parse cannot meet deeper nesting than `depth`.
 * Grammar errors inside an element are left to JSON.parse of that element.
 */
export function splitBatch(buf: Buffer, lim: { eventsPerBatch: number; eventBytes: number; depth: number } = RECEIVER_LIMITS): Split {
  const n = buf.length;
  let i = 0;
  while (i < n && WS[buf[i]!]) i++;
  if (buf[i] !== 0x5b) return { ok: false, reason: "batch plaintext is not a JSON array" };
  i++;
  const starts: number[] = [];
  const ends: number[] = [];
  let depth = 0;
  let start = -1;
  for (; i < n; i++) {
    const c = buf[i]!;
    if (WS[c]) continue;
    if (start < 0) {
      if (c === 0x5d && starts.length === 0 && depth === 0) break; // []
      start = i;
      if (starts.length >= lim.eventsPerBatch) return { ok: false, reason: `batch has more than ${lim.eventsPerBatch} events` };
    }
    if (c === 0x22) {
      // A string: skip to its closing quote (backslash escapes the next byte).
      for (i++; i < n; i++) {
        const s = buf[i]!;
        if (s === 0x5c) i++;
        else if (s === 0x22) break;
      }
      if (i >= n) return { ok: false, reason: "batch plaintext ends inside a string" };
      continue;
    }
    if (c === 0x5b || c === 0x7b) {
      if (++depth > lim.depth) return { ok: false, reason: `an event in the batch is nested deeper than ${lim.depth} levels` };
      continue;
    }
    const closesTop = c === 0x5d && depth === 0;
    if (c === 0x5d || c === 0x7d) {
      if (depth === 0 && !closesTop) return { ok: false, reason: "batch plaintext has unbalanced brackets" };
      if (!closesTop) depth--;
    }
    if ((c === 0x2c && depth === 0) || closesTop) {
      let end = i;
      while (end > start && WS[buf[end - 1]!]) end--;
      if (end - start > lim.eventBytes) return { ok: false, reason: `an event in the batch is larger than ${lim.eventBytes} bytes` };
      if (end === start) return { ok: false, reason: "batch plaintext has an empty array element" };
      starts.push(start);
      ends.push(end);
      start = -1;
      if (closesTop) break;
    } else if (i - start >= lim.eventBytes) return { ok: false, reason: `an event in the batch is larger than ${lim.eventBytes} bytes` };
  }
  if (i >= n) return { ok: false, reason: "batch plaintext is not a complete JSON array" };
  for (i++; i < n; i++) if (!WS[buf[i]!]) return { ok: false, reason: "batch plaintext has data after its JSON array" };
  return { ok: true, count: starts.length, element: (k) => buf.toString("utf8", starts[k], ends[k]) };
}

/** Sender-supplied text for a problem line's detail, cut to a readable length. */
export function clip(s: unknown, max: number = RECEIVER_LIMITS.detailChars): string {
  const t = typeof s === "string" ? s : String(s);
  return t.length > max ? `${t.slice(0, max)}… (${t.length} chars)` : t;
}
