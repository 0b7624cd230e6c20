import { describeError } from "../core/errors";
import { readHeader, type BatchOpener } from "../events/seal";
import { DEVICE_ID } from "../keys/identity";
import { clip, RECEIVER_LIMITS, splitBatch } from "./bounds";
import type { UnknownDevices } from "./unknown-devices";
import { NOT_JSON, problem, type OutLine, type ProblemLine, type StreamVerifier, type TrustLookup } from "./verifier";

export interface MessageContext {
  opener: BatchOpener;
  trust: TrustLookup;
  verifier: StreamVerifier;
  unknown: UnknownDevices;
}

/**
 * One MQTT message to its output lines, with bounded work whatever it holds: the routing header
 * first (a batch from a device without a trusted key is counted, not opened), then the box
 * (plaintext at most MAX_BATCH_PLAINTEXT), the batch split into events without parsing them
 * (count, size and depth bounded), each event parsed and verified by itself, and at most
 * `problemLinesPerMessage` problem lines plus one `suppressed` line counting the rest.
 * `mayWait`: an event signed by a key not seen yet throws AwaitingKey (see StreamVerifier).
 */
export function messageLines(ctx: MessageContext, topic: string, payload: Buffer, now: number, mayWait = false): OutLine[] {
  return capProblems(uncapped(ctx, topic, payload, now, mayWait), now);
}

function uncapped(ctx: MessageContext, topic: string, payload: Buffer, now: number, mayWait: boolean): OutLine[] {
  const bad = (detail: string, device: string | null = null) => [problem("malformed", { device, detail: `${detail} (topic ${clip(topic, 120)}, ${payload.length} bytes)`, now, topic: clip(topic, 120) })];
  let read: ReturnType<typeof readHeader>;
  try {
    read = readHeader(payload);
  } catch (e) {
    return bad(describeError(e));
  }
  const { header } = read;
  if (!DEVICE_ID.test(header.device)) return bad(`batch header names no valid device id (${clip(JSON.stringify(header.device), 80)})`);
  const topicDevice = topic.split("/").at(-2);
  if (topicDevice !== undefined && topicDevice !== header.device) return bad(`batch for ${header.device} arrived on another device's topic`, header.device);
  if (!ctx.trust.get(header.device)) return ctx.unknown.note(header.device, header.count, payload.length, now);
  let plaintext: Buffer;
  try {
    plaintext = ctx.opener.openBody(read).plaintext;
  } catch (e) {
    return bad(describeError(e), header.device);
  }
  const split = splitBatch(plaintext);
  if (!split.ok) return bad(split.reason, header.device);
  function* events(): Generator<unknown> {
    if (!split.ok) return;
    for (let i = 0; i < split.count; i++) {
      try {
        yield JSON.parse(split.element(i)) as unknown;
      } catch {
        yield NOT_JSON;
      }
    }
  }
  return ctx.verifier.ingest(header.device, events(), now, {}, { resend: header.resend === true, mayWait });
}

/**
 * Keeps every event line and the first problem lines; one more line counts the rest: of their
 * kind when they are all of one kind (a replayed batch: `duplicate`, with the positions they
 * span when in one boot), else `suppressed` with the counts by kind.
 */
export function capProblems(lines: OutLine[], now: number, max: number = RECEIVER_LIMITS.problemLinesPerMessage): OutLine[] {
  let n = 0;
  const out: OutLine[] = [];
  const counts: Record<string, number> = {};
  let first: ProblemLine | undefined;
  let oneBoot = true;
  let lo: number | null = null;
  let hi: number | null = null;
  for (const l of lines) {
    if (!("problem" in l) || ++n <= max) {
      out.push(l);
      continue;
    }
    first ??= l;
    counts[l.problem] = (counts[l.problem] ?? 0) + 1;
    oneBoot &&= l.boot === first.boot;
    if (l.first !== null) lo = lo === null ? l.first : Math.min(lo, l.first);
    if (l.last !== null) hi = hi === null ? l.last : Math.max(hi, l.last);
  }
  if (!first) return out;
  const more = n - max;
  const kinds = Object.keys(counts);
  if (kinds.length > 1) {
    out.push(problem("suppressed", { device: first.device, count: more, detail: `${more} more problem lines of this message not written one by one: ${Object.entries(counts).map(([k, v]) => `${k}=${v}`).join(", ")}`, now, counts }));
  } else {
    const span = oneBoot && lo !== null;
    out.push(problem(first.problem, { device: first.device, boot: oneBoot ? first.boot : null, first: span ? lo : null, last: span ? hi : null, count: more, detail: `${more} more ${first.problem} lines of this message, not written one by one${span ? ` (positions within ${lo}..${hi})` : ""}`, now, counts }));
  }
  return out;
}
