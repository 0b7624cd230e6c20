import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from "yaml";
import type { z } from "zod";
import { DaemonError, type ErrorCode } from "./errors";

/**
 * Problems found in a YAML file (the config, or a policy or site file it names), each with the
 * file, the 1-based line and the dotted key path, so an operator can go straight to it.
 */
export interface ConfigIssue {
  /** The file the issue is in, when it is not the config file itself (a policy or site file). */
  file?: string;
  /** Dotted key path, e.g. `upstream.url`. */
  path: string;
  /** 1-based line in the file, when the key exists there. */
  line?: number;
  message: string;
  /** What kind of problem (zod's issue code, e.g. `too_small`, `unrecognized_keys`; or a code of our own). */
  code?: string;
}

/**
 * Parses and validates a YAML file other than the config (a policy or site file) against its
 * schema; throws `code` with every issue naming the file, the line and the key path.
 */
export function parseYamlFile<S extends z.ZodType>(text: string, file: string, schema: S, code: ErrorCode): z.output<S> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const issues: ConfigIssue[] = doc.errors.map((e) => ({ file, path: "", line: lc.linePos(e.pos[0]).line, message: e.message.split("\n")[0] ?? e.message, code: "yaml" }));
    throw Object.assign(new DaemonError(code, formatIssues(file, issues)), { issues });
  }
  const r = schema.safeParse(docToJS(doc, file, code) ?? {});
  if (r.success) return r.data as z.output<S>;
  const issues = zodIssues(r.error.issues, doc, lc).map((i) => ({ file, ...i }));
  throw Object.assign(new DaemonError(code, formatIssues(file, issues)), { issues });
}

/**
 * The parsed document as plain data, or `code` naming the file: YAML the parser accepts may still
 * not expand, e.g. anchors and aliases that multiply past the library's limit ("billion laughs").
 */
export function docToJS(doc: Document, file: string, code: ErrorCode): unknown {
  try {
    return doc.toJS();
  } catch (e) {
    const issues: ConfigIssue[] = [{ file, path: "", message: `cannot be expanded: ${(e as Error).message.split("\n")[0]}`, code: "yaml" }];
    throw Object.assign(new DaemonError(code, formatIssues(file, issues)), { issues, cause: e });
  }
}

export function zodIssues(issues: z.core.$ZodIssue[], doc: Document, lc: LineCounter): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const i of issues) {
    const path = i.path.map(String);
    if (i.code === "unrecognized_keys") {
      for (const k of i.keys) {
        const full = [...path, k];
        out.push({ path: full.join("."), line: lineOf(doc, lc, full, true), message: "unknown key", code: i.code });
      }
      continue;
    }
    out.push({ path: path.join(".") || "(top level)", line: lineOf(doc, lc, path, false), message: i.message, code: i.code });
  }
  return out.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
}

/** Line of a key (or of the nearest existing parent when the key is missing). */
export function lineOf(doc: Document, lc: LineCounter, path: string[], keyLine: boolean): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const parentPath = path.slice(0, Math.max(0, n - 1));
    const parent = (n === 0 ? doc.contents : parentPath.length ? doc.getIn(parentPath, true) : doc.contents) as Node | null;
    if (n === 0) return parent?.range ? lc.linePos(parent.range[0]).line : undefined;
    const key = path[n - 1];
    if (isSeq(parent) && /^\d+$/.test(key ?? "")) {
      // A list item (`relations.2.target` stops here when the item is a plain value).
      const item = parent.items[Number(key)] as Node | undefined;
      if (item?.range) return lc.linePos(item.range[0]).line;
      continue;
    }
    if (!isMap(parent)) continue;
    const pair = parent.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === key);
    if (!pair) continue;
    const node = (keyLine || !pair.value ? pair.key : pair.value) as Node | null;
    if (node?.range) return lc.linePos(node.range[0]).line;
  }
  return undefined;
}

export function formatIssues(file: string, issues: ConfigIssue[]): string {
  return issues.map((i) => `${i.file ?? file}${i.line ? `:${i.line}` : ""}: ${i.path ? `${i.path}: ` : ""}${i.message}`).join("\n");
}
