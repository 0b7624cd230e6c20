import { readFileSync, statSync } from "node:fs";
import { isMap, isScalar, isSeq, parse as parseYamlValue, type YAMLMap, type YAMLSeq } from "yaml";
import { DaemonError } from "../core/errors";
import { redactUrl } from "../mqtt-connection";
import { writeFileAtomic } from "../core/secret-files";
import { formatIssues, lineOf, parseConfigText, validateDoc, type ConfigIssue } from "./load";
import { configSchema, type Config } from "./schema";

/**
 * `config set KEY VALUE`: edits the YAML document in place (comments and layout kept), validates
 * the whole result and writes it atomically only when it is valid. VALUE is read as a YAML
 * scalar (so 5000 is a number, true a boolean); when the key wants a string, the text is kept.
 */
export function setConfigValue(file: string, key: string, value: string): { previous: unknown; value: unknown } {
  const path = splitKey(key);
  const candidates: unknown[] = [];
  try {
    candidates.push(parseYamlValue(value));
  } catch {
    /* not a YAML scalar: try it as a string */
  }
  candidates.push(value);
  let firstIssues: ConfigIssue[] | undefined;
  for (const candidate of candidates) {
    const r = editConfig(file, key, (doc, lc) => {
      makeSections(doc, lc, file, path, key);
      doc.setIn(path, candidate);
    });
    if (r.ok) return { previous: r.previous, value: candidate };
    // The value as YAML reads it (50 is a number) says what is wrong with it; its plain-text
    // retry, for keys that want a string, would only add "expected number, received string".
    firstIssues ??= r.issues;
  }
  // A refused broker URL may carry a password: it is not echoed.
  throw Object.assign(new DaemonError("CONFIG_INVALID", `refusing to set ${key} = ${JSON.stringify(redactUrl(value))}:
${formatIssues(file, firstIssues ?? [])}`), { issues: firstIssues });
}

/**
 * `config unset KEY`: removes the key from the file (the default, if any, applies again), with the
 * same checks as `set`: a key the schema does not know is refused, and the file is written only
 * when the result is valid (a required key stays).
 */
export function unsetConfigValue(file: string, key: string): { previous: unknown } {
  const path = splitKey(key);
  if (!isOptionalKnown(key)) throw new DaemonError("CONFIG_KEY_UNKNOWN", `${key} is not a config key`);
  // A key whose section is absent (or is a value, not a section) is not set: nothing to remove.
  const r = editConfig(file, key, (doc) => {
    if (doc.hasIn(path)) doc.deleteIn(path);
  });
  if (r.ok) return { previous: r.previous };
  throw Object.assign(new DaemonError("CONFIG_INVALID", `refusing to unset ${key}:
${formatIssues(file, r.issues)}`), { issues: r.issues });
}

type Doc = ReturnType<typeof parseConfigText>["doc"];
type Lines = ReturnType<typeof parseConfigText>["lc"];

/** Applies one edit to the YAML document, validates the whole result and writes it only if valid. */
function editConfig(file: string, key: string, edit: (doc: Doc, lc: Lines) => void): { ok: true; previous: unknown } | { ok: false; issues: ConfigIssue[] } {
  const text = readFileSync(file, "utf8");
  const mode = statSync(file).mode & 0o777;
  const { doc, lc } = parseConfigText(text, file);
  if (!isMap(doc.contents)) throw notAMapping(file, doc.contents);
  const previous = doc.getIn(splitKey(key));
  edit(doc, lc);
  const out = doc.toString();
  const reparsed = parseConfigText(out, file);
  const { issues } = validateDoc(reparsed.doc, reparsed.lc, file);
  if (!issues.length) {
    if (out !== text) writeFileAtomic(file, out, mode);
    return { ok: true, previous: plain(previous) };
  }
  if (issues.some((i) => i.path === key && i.message === "unknown key")) throw new DaemonError("CONFIG_KEY_UNKNOWN", `${key} is not a config key`);
  return { ok: false, issues };
}

/** CONFIG_INVALID naming a config file whose top level is not a mapping of keys (empty, a value, a list). */
function notAMapping(file: string, contents: unknown): DaemonError {
  const what = contents == null ? "empty" : isScalar(contents) && contents.value == null ? "null" : isSeq(contents) ? "a list" : `a single ${isScalar(contents) ? typeof contents.value : "value"}`;
  const message = `the file is ${what}, not a YAML mapping of config keys (device:, upstream:, ...)`;
  return Object.assign(new DaemonError("CONFIG_INVALID", `${file}: ${message}`), { issues: [{ path: "(top level)", message }] });
}

/**
 * Before `set` of a nested key: each section on the way that is absent (or empty) is created, so
 * `set detection.close_after 3` works in a file with no `detection:` yet. A value where a section
 * should be is refused naming the key: CONFIG_KEY_UNKNOWN when the schema has no such key
 * (`device.id.x`), else CONFIG_INVALID naming the section, its line and what it holds.
 */
function makeSections(doc: Doc, lc: Lines, file: string, path: string[], key: string): void {
  let node = doc.contents as YAMLMap | YAMLSeq;
  for (let i = 0; i < path.length; i++) {
    const part = path[i]!;
    const at = path.slice(0, i).join(".");
    if (isSeq(node) && !(/^\d+$/.test(part) && Number(part) <= node.items.length)) {
      if (!/^\d+$/.test(part)) throw new DaemonError("CONFIG_KEY_UNKNOWN", `${key} is not a config key (${at} is a list: its items are numbered from 0)`);
      throw refused(key, file, [{ path: at, line: lineOf(doc, lc, path.slice(0, i), false), message: `a list of ${node.items.length} item(s): ${key} can change one of 0..${node.items.length - 1} or add one at ${node.items.length}` }]);
    }
    if (i === path.length - 1) return;
    const next: unknown = node.get(part, true);
    if (next === undefined || next === null || (isScalar(next) && next.value === null)) {
      const made = doc.createNode({}) as YAMLMap;
      node.set(part, made);
      node = made;
    } else if (isMap(next) || isSeq(next)) {
      node = next;
    } else {
      if (!isOptionalKnown(key)) throw new DaemonError("CONFIG_KEY_UNKNOWN", `${key} is not a config key`);
      const section = path.slice(0, i + 1);
      throw refused(key, file, [{ path: section.join("."), line: lineOf(doc, lc, section, false), message: `holds a value, not a section of keys: ${key} cannot be set inside it (set ${section.join(".")} itself, or unset it first)` }]);
    }
  }
}

function refused(key: string, file: string, issues: ConfigIssue[]): DaemonError {
  return Object.assign(new DaemonError("CONFIG_INVALID", `refusing to set ${key}:\n${formatIssues(file, issues)}`), { issues });
}

/** A YAML node (a map or list the key held) as plain data; scalars come back as they are. */
function plain(v: unknown): unknown {
  return v !== null && typeof v === "object" && "toJSON" in v && typeof (v as { toJSON: unknown }).toJSON === "function" ? (v as { toJSON(): unknown }).toJSON() : v;
}

/** Reads a key of the effective config (defaults applied). */
export function getConfigValue(config: Config, key: string): unknown {
  let cur: unknown = config;
  for (const part of splitKey(key)) {
    if (typeof cur !== "object" || cur === null || !(part in cur)) {
      // A known but unset optional key answers undefined; anything else is unknown.
      if (typeof cur === "object" && cur !== null && isOptionalKnown(key)) return undefined;
      throw new DaemonError("CONFIG_KEY_UNKNOWN", `${key} is not a config key`);
    }
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** True when the schema knows the key, even if it is unset in this config. */
function isOptionalKnown(key: string): boolean {
  let cur: ZodLike | undefined = configSchema as unknown as ZodLike;
  for (const part of key.split(".")) {
    cur = unwrap(cur);
    const def = cur?._zod.def;
    if (def?.type === "object") cur = def.shape?.[part];
    else if (def?.type === "record") cur = def.valueType;
    else return false;
    if (!cur) return false;
  }
  return true;
}

interface ZodLike {
  _zod: { def: { type: string; shape?: Record<string, ZodLike>; innerType?: ZodLike; in?: ZodLike; valueType?: ZodLike } };
}

function unwrap(s: ZodLike | undefined): ZodLike | undefined {
  while (s) {
    const d = s._zod.def;
    if (d.type === "optional" || d.type === "default" || d.type === "prefault" || d.type === "nullable") s = d.innerType;
    else if (d.type === "pipe") s = d.in;
    else return s;
  }
  return s;
}

function splitKey(key: string): string[] {
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(key)) throw new DaemonError("USAGE", `"${key}" is not a dotted config key such as upstream.url`);
  return key.split(".");
}
