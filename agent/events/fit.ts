/**
 * The size bound of one event. A commit must fit the WAL's share of `buffer.max_bytes` and a
 * message must fit the broker's maximum packet, so an event whose body is larger than the bound
 * (a component listing 20,000 changed files, a peer's megabyte-long string) would otherwise stop
 * every event behind it. It is recorded instead with its largest values replaced by a marker:
 * class, severity, OCSF class and activity and (cut to 4,096 characters) the message stay, and
 * `unmapped.truncated` says how large it was and which values were removed.
 */
import { canonicalize } from "../core/canonical";
import type { EventDraft, OcsfDraft } from "../core/events";

/** The largest event body the recorder commits (its canonical envelope, in bytes). */
export const MAX_EVENT_BYTES = 64 * 1024;
/** A message longer than this is cut when its event is over the bound. */
const MESSAGE_CHARS = 4096;
/** Room left for the envelope's own fields and the truncation note. */
const RESERVE = 2048;
/** How deep values are considered for removal (deeper ones go with their parent). */
const MAX_DEPTH = 4;
/** Removals tried before falling back to the bare event. */
const MAX_REMOVALS = 32;
/** Never removed: what the SOC needs to file the event. */
const KEPT = new Set(["class_uid", "activity_id", "message"]);

interface Node { path: string; parent: Record<string, unknown> | unknown[]; key: string | number; bytes: number }

/** UTF-8 bytes of a value's canonical JSON. */
function sizeOf(v: unknown): number {
  return Buffer.byteLength(canonicalize(v));
}

function marker(bytes: number): string {
  return `[removed: ${bytes} bytes, over the size bound of one event]`;
}

/** Every removable value down to MAX_DEPTH, with its canonical size (largest first). */
function nodes(root: Record<string, unknown>): Node[] {
  const out: Node[] = [];
  const walk = (v: unknown, path: string, depth: number) => {
    if (depth > MAX_DEPTH || typeof v !== "object" || v === null) return;
    const entries: [string | number, unknown][] = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
    for (const [k, x] of entries) {
      if (depth === 1 && KEPT.has(String(k))) continue;
      const p = typeof k === "number" ? `${path}[${k}]` : path ? `${path}.${k}` : k;
      const bytes = sizeOf(x);
      if (bytes <= 64) continue; // nothing in it is worth a marker
      out.push({ path: p, parent: v as Record<string, unknown> | unknown[], key: k, bytes });
      walk(x, p, depth + 1);
    }
  };
  walk(root, "", 1);
  return out.sort((a, b) => b.bytes - a.bytes);
}

/**
 * The draft itself when its OCSF body is within `limit` bytes (less the envelope's room);
 * otherwise a copy with the fewest large values replaced (each time the smallest one whose
 * removal alone is enough, else the largest), and the note.
 */
export function fitDraft(d: EventDraft, limit: number): EventDraft {
  const budget = Math.max(1024, limit - RESERVE);
  const bytes = sizeOf(d.ocsf);
  if (bytes <= budget) return d;
  const ocsf = JSON.parse(canonicalize(d.ocsf)) as OcsfDraft;
  const removed: string[] = [];
  if (ocsf.message.length > MESSAGE_CHARS) {
    ocsf.message = `${ocsf.message.slice(0, MESSAGE_CHARS)}… [cut from ${ocsf.message.length} characters]`;
    removed.push("message (cut)");
  }
  let size = sizeOf(ocsf);
  for (let i = 0; i < MAX_REMOVALS && size > budget; i++) {
    const all = nodes(ocsf);
    if (!all.length) break;
    const excess = size - budget;
    const enough = all.filter((n) => n.bytes - marker(n.bytes).length >= excess);
    const pick = enough.length ? enough[enough.length - 1]! : all[0]!;
    (pick.parent as Record<string | number, unknown>)[pick.key] = marker(pick.bytes);
    removed.push(pick.path);
    size = sizeOf(ocsf);
  }
  const note = { original_bytes: bytes, limit_bytes: limit, removed };
  if (size > budget) {
    // Nothing left to remove piecemeal (thousands of small keys): the bare event.
    const bare: OcsfDraft = { class_uid: ocsf.class_uid, activity_id: ocsf.activity_id, message: ocsf.message.slice(0, MESSAGE_CHARS) };
    return { ...d, ocsf: { ...bare, unmapped: { truncated: { ...note, removed: ["every attribute but class_uid, activity_id and message"] } } } };
  }
  const unmapped = typeof ocsf.unmapped === "object" && ocsf.unmapped !== null && !Array.isArray(ocsf.unmapped) ? (ocsf.unmapped as Record<string, unknown>) : undefined;
  if (unmapped) unmapped.truncated = note;
  else ocsf.unmapped = ocsf.unmapped === undefined ? { truncated: note } : { truncated: note, value: ocsf.unmapped };
  return { ...d, ocsf };
}
