/**
 * Reading the offline CSV format: a header row, first column a timestamp
 * (`YYYY-MM-DD HH:MM:SS`, ISO 8601 or epoch seconds), then one numeric column per signal,
 * `,` or `;` separated. A bad header is DaemonError INPUT_INVALID naming the file; a row that
 * cannot be read is skipped and counted (with line and why), a timestamp earlier than the row
 * before is kept and counted.
 */
import { readFileSync } from "node:fs";
import { DaemonError } from "../agent/core/errors";

export interface CsvTable {
  file: string;
  columns: string[];
  /** Timestamp text as given in the file (echoed in the output). */
  tsText: string[];
  /** Parsed timestamps, ms since the epoch (UTC when the text has no zone). */
  ts: number[];
  /** values[c][row]; NaN where a cell is empty. */
  values: Float64Array[];
  /** Rows left out because they cannot be read: how many, and the first few with line and why. */
  skipped?: { count: number; first: SkippedRow[] };
  /** Rows whose timestamp is earlier than the row before (kept, and reported). */
  backwards?: { count: number; first: { line: number; ts: string; previous: string }[] };
}

export interface SkippedRow {
  line: number;
  /** `fields` (wrong number of fields), `timestamp` (unreadable), `number` (a cell is not a number). */
  problem: "fields" | "timestamp" | "number";
  detail: string;
}

/** How many skipped or backwards rows are listed one by one (all are counted). */
export const LISTED_ROWS = 20;

const PLAIN = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?$/;
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Parses a timestamp cell to ms since the epoch, or null. Zone-less times are taken as UTC. */
export function parseTimestamp(s: string): number | null {
  const t = s.trim();
  if (NUMBER.test(t)) {
    const v = Number(t);
    return Number.isFinite(v) ? Math.round(v * 1000) : null;
  }
  const m = PLAIN.exec(t);
  if (m) {
    const ms = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +(m[6] ?? 0)) + Math.round(Number(m[7] ?? 0) * 1000);
    return Number.isFinite(ms) ? ms : null;
  }
  if (/^\d{4}-\d{2}-\d{2}T/.test(t)) {
    const ms = Date.parse(t);
    return Number.isNaN(ms) ? null : ms;
  }
  return null;
}

function unquote(s: string): string {
  const t = s.trim();
  return t.length >= 2 && t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1).replace(/""/g, '"') : t;
}

export function parseCsv(text: string, file: string): CsvTable {
  const lines = text.split(/\r?\n/);
  const head = lines[0] ?? "";
  if (!head.trim()) throw new DaemonError("INPUT_INVALID", `${file}:1: no header row`);
  const delim = (head.match(/;/g)?.length ?? 0) > (head.match(/,/g)?.length ?? 0) ? ";" : ",";
  const columns = head.replace(/^\uFEFF/, "").split(delim).map(unquote);
  if (columns.length < 2) throw new DaemonError("INPUT_INVALID", `${file}:1: need a timestamp column and at least one signal column`);
  const names = columns.slice(1);
  const seen = new Set<string>();
  names.forEach((n) => {
    if (!n) throw new DaemonError("INPUT_INVALID", `${file}:1: empty column name`);
    if (seen.has(n)) throw new DaemonError("INPUT_INVALID", `${file}:1: duplicate column ${n}`);
    seen.add(n);
  });
  const cols: number[][] = names.map(() => []);
  const tsText: string[] = [];
  const ts: number[] = [];
  const skipped: NonNullable<CsvTable["skipped"]> = { count: 0, first: [] };
  const backwards: NonNullable<CsvTable["backwards"]> = { count: 0, first: [] };
  const skip = (line: number, problem: SkippedRow["problem"], detail: string) => {
    skipped.count++;
    if (skipped.first.length < LISTED_ROWS) skipped.first.push({ line, problem, detail });
  };
  const row: number[] = new Array<number>(names.length);
  rows: for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line.trim()) continue;
    const cells = line.split(delim);
    if (cells.length !== columns.length) {
      skip(i + 1, "fields", `${cells.length} fields, the header has ${columns.length}`);
      continue;
    }
    const tText = unquote(cells[0]!);
    const t = parseTimestamp(tText);
    if (t === null) {
      skip(i + 1, "timestamp", `bad timestamp "${tText.slice(0, 40)}"`);
      continue;
    }
    for (let c = 1; c < cells.length; c++) {
      const cell = unquote(cells[c]!);
      if (cell === "" || /^(nan|null|na)$/i.test(cell)) row[c - 1] = Number.NaN;
      else {
        const numeric = NUMBER.test(cell);
        const v = numeric ? Number(cell) : Number.NaN;
        if (Number.isFinite(v)) row[c - 1] = v;
        else {
          skip(i + 1, "number", `column ${names[c - 1]}: "${cell.slice(0, 40)}" ${numeric ? "is beyond the range of a number" : "is not a number"}`);
          continue rows;
        }
      }
    }
    const prev = ts.length ? ts[ts.length - 1]! : undefined;
    if (prev !== undefined && t < prev) {
      backwards.count++;
      if (backwards.first.length < LISTED_ROWS) backwards.first.push({ line: i + 1, ts: tText, previous: tsText[tsText.length - 1]! });
    }
    tsText.push(tText);
    ts.push(t);
    for (let c = 0; c < names.length; c++) cols[c]!.push(row[c]!);
  }
  if (ts.length === 0) throw new DaemonError("INPUT_INVALID", `${file}: no data rows${skipped.count ? ` (${skipped.count} unreadable, the first at line ${skipped.first[0]!.line}: ${skipped.first[0]!.detail})` : ""}`);
  return { file, columns: names, tsText, ts, values: cols.map((c) => Float64Array.from(c)), skipped, backwards };
}

/** Warning lines for rows a table left out or that went back in time (the CLI prints them on stderr). */
export function csvWarnings(t: CsvTable): string[] {
  const skipped = t.skipped ?? { count: 0, first: [] };
  const backwards = t.backwards ?? { count: 0, first: [] };
  const out = skipped.first.map((r) => `${t.file}:${r.line}: row skipped: ${r.detail}`);
  if (skipped.count > skipped.first.length) out.push(`${t.file}: ${skipped.count - skipped.first.length} more rows skipped`);
  for (const b of backwards.first) out.push(`${t.file}:${b.line}: time goes backwards: ${b.ts} after ${b.previous}`);
  if (backwards.count > backwards.first.length) out.push(`${t.file}: time goes backwards at ${backwards.count - backwards.first.length} more rows`);
  return out;
}

export function readCsv(file: string): CsvTable {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? "error"})`, { cause: e });
  }
  return parseCsv(text, file);
}
