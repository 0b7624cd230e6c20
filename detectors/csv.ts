/**
 * Reading the offline CSV format: a header row, first column a timestamp
 * (`YYYY-MM-DD HH:MM:SS`, ISO 8601 or epoch seconds), then one numeric column per signal,
 * `,` or `;` separated. Errors are DaemonError INPUT_INVALID naming the file and line.
 */
import { readFileSync } from "node:fs";
import { DaemonError } from "../agent/errors";

export interface CsvTable {
  file: string;
  columns: string[];
  /** Timestamp text as given in the file (echoed in the output). */
  tsText: string[];
  /** Parsed timestamps, ms since the epoch (UTC when the text has no zone). */
  ts: number[];
  /** values[c][row]; NaN where a cell is empty. */
  values: Float64Array[];
}

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
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line.trim()) continue;
    const cells = line.split(delim);
    if (cells.length !== columns.length) {
      throw new DaemonError("INPUT_INVALID", `${file}:${i + 1}: ${cells.length} fields, the header has ${columns.length}`);
    }
    const tText = unquote(cells[0]!);
    const t = parseTimestamp(tText);
    if (t === null) throw new DaemonError("INPUT_INVALID", `${file}:${i + 1}: bad timestamp "${tText.slice(0, 40)}"`);
    tsText.push(tText);
    ts.push(t);
    for (let c = 1; c < cells.length; c++) {
      const cell = unquote(cells[c]!);
      if (cell === "" || /^(nan|null|na)$/i.test(cell)) {
        cols[c - 1]!.push(Number.NaN);
        continue;
      }
      if (!NUMBER.test(cell)) {
        throw new DaemonError("INPUT_INVALID", `${file}:${i + 1}: column ${names[c - 1]}: "${cell.slice(0, 40)}" is not a number`);
      }
      cols[c - 1]!.push(Number(cell));
    }
  }
  if (ts.length === 0) throw new DaemonError("INPUT_INVALID", `${file}: no data rows`);
  return { file, columns: names, tsText, ts, values: cols.map((c) => Float64Array.from(c)) };
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
