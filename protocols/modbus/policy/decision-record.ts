/**
 * One line per decision, as `gatewarden modbus proxy` prints it and as `policy learn` and
 * `policy replay` read it (JSON lines). `request` is the re-serialised request PDU in hex,
 * absent when the frame was malformed (rule `frame`).
 */
import { readFileSync } from "node:fs";
import { DaemonError } from "../../../agent/core/errors";
import { FUNCTION_NAMES } from "../codec/function-codes";
import { describeIdentity, type PeerIdentity } from "./identity";
import type { ModbusRequest } from "../codec/pdu";
import { accesses } from "./engine";

export interface DecisionRecord {
  ts: number;
  listener: string;
  identity: string;
  transport: "tcp" | "tls";
  address: string;
  role?: string;
  fingerprint?: string;
  subject?: string;
  /** Why the certificate's role is unusable, when it is. */
  role_error?: string;
  unit: number;
  fc: number;
  function: string;
  addresses?: string;
  values?: number[];
  allow: boolean;
  rule: string;
  reason?: string;
  request?: string;
  /** Exception code answered, if any (policy denial 01, gateway 0A/0B, upstream's own). */
  exception?: number;
  /** Identical requests this line stands for (commissioning mode counts repeats of allowed
   * reads within one batch; see decision-lines.ts); absent: 1. */
  count?: number;
  /** The last of those requests' time, when `count` is more than 1. */
  last_ts?: number;
}

/** How many requests a record stands for. */
export const requestsOf = (r: DecisionRecord): number => r.count ?? 1;

export function describeAccesses(req: ModbusRequest): string | undefined {
  const a = accesses(req);
  if (!a.length) return req.fc === 8 ? `sub ${req.sub}` : req.fc === 43 ? `device-id ${req.readCode}/${req.objectId}` : undefined;
  return a.map((x) => `${x.mode === "write" ? "write " : ""}${x.table === "file" ? `file ${x.file} ` : `${x.table} `}${x.address}${x.quantity > 1 ? `-${x.address + x.quantity - 1}` : ""}`).join("; ");
}

export function writtenValues(req: ModbusRequest): number[] | undefined {
  switch (req.fc) {
    case 5:
    case 6:
      return [req.value];
    case 15:
    case 16:
    case 23:
      return req.values.slice(0, 32);
    case 22:
      return [req.andMask, req.orMask];
    case 21:
      return req.records.flatMap((r) => r.data).slice(0, 32);
    default:
      return undefined;
  }
}

export function identityFields(id: PeerIdentity): Pick<DecisionRecord, "identity" | "transport" | "address" | "role" | "fingerprint" | "subject" | "role_error"> {
  return {
    identity: describeIdentity(id),
    transport: id.transport,
    address: id.address,
    ...(id.role ? { role: id.role } : {}),
    ...(id.fingerprint ? { fingerprint: id.fingerprint } : {}),
    ...(id.subject ? { subject: id.subject } : {}),
    ...(id.roleError ? { role_error: id.roleError } : {}),
  };
}

/** The identity a record was made under (for replay). */
export function recordIdentity(r: DecisionRecord): PeerIdentity {
  return {
    transport: r.transport,
    address: r.address,
    ...(r.role ? { role: r.role } : {}),
    ...(r.fingerprint ? { fingerprint: r.fingerprint } : {}),
    ...(r.subject ? { subject: r.subject } : {}),
    ...(r.role_error ? { roleError: r.role_error } : {}),
  };
}

/** Read JSON lines of decision records; blank lines and lines that are not records (or whose
 * `count` is not a positive integer) are skipped, and counted: `skipped`, and the 1-based
 * number of the first one. */
export function parseRecords(text: string): { records: DecisionRecord[]; skipped: number; firstSkipped?: number } {
  const records: DecisionRecord[] = [];
  let skipped = 0;
  let firstSkipped: number | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i]!.trim();
    if (!t) continue;
    let ok = false;
    try {
      const r = JSON.parse(t) as DecisionRecord;
      ok = typeof r === "object" && !!r && typeof r.unit === "number" && typeof r.fc === "number" && (r.transport === "tcp" || r.transport === "tls") && typeof r.address === "string" && (r.count === undefined || (Number.isSafeInteger(r.count) && r.count > 0));
      if (ok) records.push(r);
    } catch {
      ok = false;
    }
    if (!ok) {
      skipped++;
      firstSkipped ??= i + 1;
    }
  }
  return { records, skipped, ...(firstSkipped === undefined ? {} : { firstSkipped }) };
}

export function functionName(fc: number): string {
  return FUNCTION_NAMES[fc] ?? `fc${fc}`;
}

export interface RecordsRead {
  records: DecisionRecord[];
  /** Lines that are not decision records, skipped (0: none). */
  skipped: number;
  /** What to tell the operator about the skipped lines ("" when none was). */
  warning: string;
}

/**
 * Decision records from a file of JSON lines (`-`: stdin), with the lines it skipped counted.
 * INPUT_INVALID naming the file when it cannot be read or holds no decision record at all
 * (learning from it would propose an empty policy, replaying it would say nothing).
 */
export function readRecordsFile(path: string): RecordsRead {
  let text: string;
  try {
    text = path === "-" ? readFileSync(0, "utf8") : readFileSync(path, "utf8");
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `cannot read ${path} (${(e as Error).message})`, { cause: e });
  }
  const name = path === "-" ? "standard input" : path;
  const r = parseRecords(text);
  if (r.records.length === 0) {
    throw new DaemonError(
      "INPUT_INVALID",
      r.skipped === 0
        ? `--input ${name} is empty: it holds no decision record (JSON lines as printed by \`modbus proxy\`)`
        : `--input ${name} holds no decision record: none of its ${r.skipped} non-blank lines is one (JSON lines as printed by \`modbus proxy\`; line ${r.firstSkipped} is not)`,
    );
  }
  const warning = r.skipped ? `warning: --input ${name}: ${r.skipped === 1 ? "1 line is not a decision record and was" : `${r.skipped} lines are not decision records and were`} skipped (the first at line ${r.firstSkipped})\n` : "";
  return { records: r.records, skipped: r.skipped, warning };
}
