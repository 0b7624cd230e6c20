import { createHash } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { DaemonError, isDaemonError, pathUnusable } from "../agent/core/errors";
import { makeDirs, ownershipOf } from "../agent/core/dirs";
import { writeFileAtomic } from "../agent/core/secret-files";
import { OcsfClass } from "../agent/core/events";
import type { EventDraft } from "../agent/core/events";
import { fsyncDir } from "./state";
import type { ConfigFile, GatewayConfig } from "./site";

/**
 * Self-integrity: a measured manifest (SHA-256 per file) of the agent's own program, its config,
 * policy and site files, trust anchors, and `integrity.paths` (hook scripts, release folder...).
 * `gatewarden integrity accept` takes it (audited); the daemon re-measures at start and every
 * `integrity.interval_ms` and records a drift as a signed finding.
 */
export const integritySchema = z.strictObject({
  interval_ms: z.number().int().min(1000).max(86_400_000).default(300_000),
  manifest_path: z.string().min(1).default("data/integrity.json"),
  /** More files or directories to measure (e.g. the hook scripts, /etc/rauc/system.conf). */
  paths: z.array(z.string().min(1)).max(256).default([]),
});
export type IntegrityConfig = z.output<typeof integritySchema>;

/** Most files measured (directories are walked): bounded for a Pi. */
const MAX_FILES = 20_000;

export interface Measurement {
  time: string;
  files: Record<string, string>;
}

export interface Drift {
  changed: string[];
  added: string[];
  missing: string[];
}

export type IntegrityState = "ok" | "drift" | "no_manifest" | "unknown";

/** The program file: the bundle (dist/gatewarden.cjs) when running from it. */
export function programFile(): string {
  return fileURLToPath(import.meta.url);
}

export function measuredPaths(loaded: ConfigFile): string[] {
  const c: GatewayConfig = loaded.config;
  const i = c.integrity!;
  return [
    programFile(),
    loaded.file,
    c.modbus?.policy_file,
    c.detection.site,
    c.upstream.ca,
    c.upstream.soc_public_key,
    ...(c.update?.release_keys ?? []),
    ...i.paths,
  ].filter((p): p is string => typeof p === "string");
}

export function measure(paths: readonly string[]): Measurement {
  const files: Record<string, string> = {};
  let n = 0;
  const add = (p: string) => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      files[p] = "missing";
      return;
    }
    // A file or directory that exists but cannot be read is not measured as anything: the
    // measurement fails, naming it (the daemon records that as a finding), rather than crash.
    const unreadable = (e: unknown) =>
      new DaemonError("PATH_UNUSABLE", `integrity: the measured ${st.isDirectory() ? "directory" : "file"} ${p} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); make it readable or take it out of integrity.paths`, { cause: e });
    if (st.isDirectory()) {
      let names: string[];
      try {
        names = readdirSync(p).sort();
      } catch (e) {
        throw unreadable(e);
      }
      for (const name of names) add(join(p, name));
      return;
    }
    if (++n > MAX_FILES) throw new DaemonError("CONFIG_INVALID", `integrity.paths: more than ${MAX_FILES} files to measure`);
    if (st.isFile()) {
      try {
        files[p] = createHash("sha256").update(readFileSync(p)).digest("hex");
      } catch (e) {
        throw unreadable(e);
      }
    } else files[p] = st.isSymbolicLink() ? `link:${readlinkSync(p)}` : "special";
  };
  // A named path is followed through symlinks (e.g. releases/current); links inside are recorded as links.
  for (const p of paths) add(existsSync(p) ? realpathSync(p) : resolve(p));
  return { time: new Date().toISOString(), files };
}

export function compare(base: Measurement, now: Measurement): Drift {
  const changed: string[] = [];
  const added: string[] = [];
  const missing: string[] = [];
  for (const [f, h] of Object.entries(base.files)) {
    if (!(f in now.files) || now.files[f] === "missing") {
      if (h !== "missing") missing.push(f);
    } else if (now.files[f] !== h) changed.push(f);
  }
  for (const [f, h] of Object.entries(now.files)) if (!(f in base.files) && h !== "missing") added.push(f);
  return { changed, added, missing };
}

export const hasDrift = (d: Drift) => d.changed.length + d.added.length + d.missing.length > 0;

export function readManifest(path: string): Measurement | undefined {
  if (!existsSync(path)) return undefined;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    // Not a bad manifest but one this user may not read (root's, from an older `sudo integrity
    // accept`): accepting again would not help, giving it back does.
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EACCES" && code !== "EPERM") throw pathUnusable(path, "integrity manifest", e as NodeJS.ErrnoException);
    const owner = ownershipOf(path);
    throw pathUnusable(path, "integrity manifest", `uid ${process.getuid?.() ?? "?"} may not read it${owner ? ` (it is ${owner})` : ""}: chown it to the daemon's user (chown gatewarden: ${path})`);
  }
  try {
    const m = JSON.parse(text) as Measurement;
    if (typeof m.files !== "object" || m.files === null) throw new Error("no files");
    return m;
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `integrity manifest ${path} is not readable JSON (${(e as Error).message}); run \`gatewarden integrity accept\``);
  }
}

export function integrityConfig(loaded: ConfigFile): IntegrityConfig {
  const i = loaded.config.integrity;
  if (!i) throw new DaemonError("CONFIG_INCOMPLETE", `${loaded.file} has no integrity section (integrity.interval_ms, integrity.paths): nothing is measured`);
  return i;
}

export interface CheckResult {
  state: IntegrityState;
  manifest: string;
  accepted_at: string | null;
  files: number;
  drift: Drift;
}

export function checkIntegrity(loaded: ConfigFile): CheckResult {
  const i = integrityConfig(loaded);
  const base = readManifest(i.manifest_path);
  const now = measure(measuredPaths(loaded));
  if (!base) return { state: "no_manifest", manifest: i.manifest_path, accepted_at: null, files: Object.keys(now.files).length, drift: { changed: [], added: [], missing: [] } };
  const drift = compare(base, now);
  return { state: hasDrift(drift) ? "drift" : "ok", manifest: i.manifest_path, accepted_at: base.time, files: Object.keys(now.files).length, drift };
}

export interface AcceptResult {
  manifest: string;
  files: number;
  drift: Drift | null;
}

/** A measurement written beside the manifest, not yet in force: `install` puts it in place, `discard` drops it. */
export interface StagedAccept {
  result: AcceptResult;
  install(): void;
  discard(): void;
}

/**
 * Measures now and writes the measurement beside integrity.manifest_path (`.accepting`), so a
 * path or disk that cannot take it fails before anything is recorded. The caller records the
 * audit event and only then installs it (a rename): an accepted manifest always has its audit
 * event; when the event cannot be recorded, the staged file is discarded and the old manifest stays.
 */
export function stageAccept(loaded: ConfigFile): StagedAccept {
  const i = integrityConfig(loaded);
  const path = i.manifest_path;
  const base = readManifestOrNone(path);
  const now = measure(measuredPaths(loaded));
  const staged = `${path}.accepting`;
  makeDirs(dirname(path), "integrity.manifest_path directory");
  try {
    writeFileAtomic(staged, JSON.stringify(now, null, 1) + "\n", 0o600);
  } catch (e) {
    throw isDaemonError(e, "PATH_UNUSABLE") ? new DaemonError("PATH_UNUSABLE", `integrity.manifest_path ${path}: ${e.message}`, { cause: e }) : e;
  }
  return {
    result: { manifest: path, files: Object.keys(now.files).length, drift: base ? compare(base, now) : null },
    install: () => {
      try {
        renameSync(staged, path);
        fsyncDir(dirname(path));
      } catch (e) {
        rmSync(staged, { force: true });
        throw pathUnusable(path, "integrity.manifest_path", e as NodeJS.ErrnoException);
      }
    },
    discard: () => rmSync(staged, { force: true }),
  };
}

/** Takes the current files as the manifest, recorded by `record` (the audit event) before it is in force. */
export async function acceptIntegrity<T>(loaded: ConfigFile, record: (r: AcceptResult) => Promise<T>): Promise<AcceptResult & { event: T }> {
  const a = stageAccept(loaded);
  let event: T;
  try {
    event = await record(a.result);
  } catch (e) {
    a.discard();
    throw e;
  }
  a.install();
  return { ...a.result, event };
}

function readManifestOrNone(path: string): Measurement | undefined {
  try {
    return readManifest(path);
  } catch {
    return undefined;
  }
}

/** An integrity finding (OCSF 2004, severity 4) with its `unmapped.integrity`. */
function integrityFinding(message: string, title: string, integrity: Record<string, unknown>, uid?: string): EventDraft {
  return {
    class: "finding",
    severity: 4,
    ocsf: {
      class_uid: OcsfClass.DetectionFinding,
      activity_id: 1,
      message,
      finding_info: { title, ...(uid ? { uid } : {}), types: ["integrity"] },
      unmapped: { integrity },
    },
  };
}

export function driftDraft(d: Drift, manifest: string): EventDraft {
  const list = [...d.changed.map((f) => `changed ${f}`), ...d.added.map((f) => `added ${f}`), ...d.missing.map((f) => `missing ${f}`)];
  return integrityFinding(
    `Integrity drift: ${list.slice(0, 5).join(", ")}${list.length > 5 ? ` and ${list.length - 5} more` : ""}`,
    "Integrity drift",
    { manifest, changed: d.changed.slice(0, 100), added: d.added.slice(0, 100), missing: d.missing.slice(0, 100) },
    `integrity:${createHash("sha256").update(list.join("\n")).digest("hex").slice(0, 16)}`,
  );
}

/** The manifest is gone while the daemon runs: not taken afresh (what changed meanwhile would become the reference). */
export function goneDraft(manifest: string): EventDraft {
  return integrityFinding(
    `Integrity manifest ${manifest} is gone while the daemon runs: the files are compared with nothing until \`gatewarden integrity accept\` (not taken afresh: what changed meanwhile would become the reference)`,
    "Integrity manifest gone",
    { manifest, state: "no_manifest" },
  );
}

/** No manifest at the start of a gateway that ran before: taken afresh, but said (severity 3). */
export function missingAtStartDraft(manifest: string, previousBoot: number): EventDraft {
  const d = integrityFinding(
    `No integrity manifest ${manifest} at start, though this gateway ran before (previous boot ${previousBoot}): the current files were taken as the manifest, so a file changed while it was missing is now the reference; expected only when integrity was just configured or its manifest_path changed`,
    "Integrity manifest missing at start",
    { manifest, state: "no_manifest", previous_boot: previousBoot },
  );
  return { ...d, severity: 3 };
}

/** A measurement failed (a manifest made unreadable hides any drift). */
export function failedDraft(error: string): EventDraft {
  return integrityFinding(`Integrity cannot be measured: ${error}`, "Integrity not measurable", { error });
}

export function acceptDraft(r: AcceptResult, by: string): EventDraft {
  const n = r.drift ? r.drift.changed.length + r.drift.added.length + r.drift.missing.length : 0;
  return {
    class: "audit",
    severity: 2,
    ocsf: {
      class_uid: OcsfClass.DeviceConfigStateChange,
      activity_id: 99,
      message: `Integrity manifest accepted by ${by}: ${r.files} files${r.drift ? `, ${n} differences from the previous one` : " (first manifest)"}`,
      unmapped: { integrity: { manifest: r.manifest, files: r.files, ...(r.drift ? { changed: r.drift.changed.slice(0, 100), added: r.drift.added.slice(0, 100), missing: r.drift.missing.slice(0, 100) } : {}) } },
    },
  };
}
