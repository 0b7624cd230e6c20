import { readFileSync, statSync } from "node:fs";
import { parse as parseYamlValue } from "yaml";
import { DaemonError } from "../core/errors";
import { redactUrl } from "../mqtt-connection";
import { writeFileAtomic } from "../core/secret-files";
import { formatIssues, parseConfigText, validateDoc, type ConfigIssue } from "./load";
import { configSchema, type Config } from "./schema";

/**
 * `config set KEY VALUE`: edits the YAML document in place (comments and layout kept), validates
 * the whole result and writes it atomically only when it is valid. VALUE is read as a YAML
 * scalar (so 5000 is a number, true a boolean); when the key wants a string, the text is kept.
 */
export function setConfigValue(file: string, key: string, value: string): { previous: unknown; value: unknown } {
  const path = splitKey(key);
  const text = readFileSync(file, "utf8");
  const mode = statSync(file).mode & 0o777;
  let firstIssues: ConfigIssue[] | undefined;
  const candidates: unknown[] = [];
  try {
    candidates.push(parseYamlValue(value));
  } catch {
    /* not a YAML scalar: try it as a string */
  }
  candidates.push(value);
  for (const candidate of candidates) {
    const { doc, lc } = parseConfigText(text, file);
    const previous = doc.getIn(path);
    doc.setIn(path, candidate);
    const out = doc.toString();
    const reparsed = parseConfigText(out, file);
    const { issues } = validateDoc(reparsed.doc, reparsed.lc);
    if (!issues.length) {
      writeFileAtomic(file, out, mode);
      return { previous, value: candidate };
    }
    const unknown = issues.find((i) => i.path === key && i.message === "unknown key");
    if (unknown) throw new DaemonError("CONFIG_KEY_UNKNOWN", `${key} is not a config key`);
    void lc;
    // The value as YAML reads it (50 is a number) says what is wrong with it; its plain-text
    // retry, for keys that want a string, would only add "expected number, received string".
    firstIssues ??= issues;
  }
  // A refused broker URL may carry a password: it is not echoed.
  throw Object.assign(new DaemonError("CONFIG_INVALID", `refusing to set ${key} = ${JSON.stringify(redactUrl(value))}:
${formatIssues(file, firstIssues ?? [])}`), { issues: firstIssues });
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
