import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, statSync, chmodSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { DaemonError, describeError } from "../agent/core/errors";
import { updateDraft, type ConfigFile, type HookSite } from "./site";
import { healthCheck, type HealthVerdict } from "./health";
import { remeasure, run, updateConfig } from "./hook";
import { listFiles, loadReleasePublicKeys, readSignedRelease, RELEASE_FILE, verifyRelease, type ReleaseCheck } from "./release";
import { fsyncDir, UpdateState } from "./state";
import { makeDirs } from "../agent/core/dirs";

/**
 * Updating Gatewarden alone, where no update engine runs: each release in its own folder
 * `releases_dir/<version>`, the running one named by the symlink `releases_dir/current`,
 * switched atomically (a new link renamed over the old one, then the directory fsynced). At
 * every instant `current` names a complete, verified release folder: the old one until the
 * rename, the new one after it. A release folder is copied into a staging folder, fsynced,
 * verified again and only then renamed into place.
 *
 * apply: verify -> stage -> install -> pending -> switch -> restart -> health -> commit
 * (counter raised) or switch back -> restart -> recorded roll back.
 */
export const STEPS = ["verified", "staging", "staged", "installed", "pending", "switched", "restarted", "judged", "committed"] as const;
export type Step = (typeof STEPS)[number];

export interface StandaloneOptions {
  /** Called after each step; the kill -9 test crashes the process here. */
  onStep?: (s: Step) => void;
}

function ctx(loaded: ConfigFile) {
  const u = updateConfig(loaded);
  return { u, state: new UpdateState(u.state_dir), dir: u.releases_dir, keys: () => loadReleasePublicKeys(u.release_keys) };
}

export function currentVersion(releasesDir: string): string | null {
  try {
    return readlinkSync(join(releasesDir, "current"));
  } catch {
    return null;
  }
}

export function verifyBundle(loaded: ConfigFile, bundle: string): ReleaseCheck {
  const c = ctx(loaded);
  return verifyRelease(resolve(bundle), { keys: c.keys(), deviceClass: c.u.device_class, minCounter: c.state.committed().counter });
}

/** Copies `from` into `to` file by file, each fsynced, directories fsynced. */
function copyTree(from: string, to: string, onFirst?: () => void): void {
  let first = true;
  for (const rel of [...listFiles(from), RELEASE_FILE]) {
    const src = join(from, rel);
    const dst = join(to, rel);
    makeDirs(dirname(dst), "release directory", 0o755);
    copyFileSync(src, dst);
    chmodSync(dst, statSync(src).mode & 0o755);
    const fd = openSync(dst, "r");
    fsyncSync(fd);
    closeSync(fd);
    if (first) onFirst?.();
    first = false;
  }
  for (const d of new Set([...listFiles(to)].map((f) => dirname(join(to, f))))) fsyncDir(d);
  fsyncDir(to);
}

function switchTo(dir: string, version: string): void {
  const tmp = join(dir, `.current-${process.pid}`);
  rmSync(tmp, { force: true });
  symlinkSync(version, tmp);
  renameSync(tmp, join(dir, "current"));
  fsyncDir(dir);
}

function restart(cmd: string[] | undefined): void {
  if (cmd) run(cmd);
}

export interface ApplyResult {
  ok: boolean;
  version: string;
  previous: string | null;
  message: string;
  health?: HealthVerdict;
}

export async function applyUpdate(loaded: HookSite, bundle: string, o: StandaloneOptions = {}): Promise<ApplyResult> {
  const c = ctx(loaded);
  const step = (s: Step) => o.onStep?.(s);
  const rec = (stage: string, ok: boolean, message: string, detail: Record<string, unknown> = {}) => loaded.audit(updateDraft({ engine: "gatewarden", stage, ok, message, detail }));
  const pending = c.state.pending();
  if (pending) throw new DaemonError("UPDATE_STATE", `update ${pending.version} (${pending.engine}) is still pending from ${pending.time}; run \`gatewarden update rollback\` first`);
  const previous = currentVersion(c.dir);
  let check: ReleaseCheck;
  try {
    check = verifyBundle(loaded, bundle);
  } catch (e) {
    const code = (e as DaemonError).code;
    if (code && /^(RELEASE_|UPDATE_STATE|KEY_)/.test(code)) await rec("verify", false, `Update refused: ${(e as Error).message}`, { reason: code });
    throw e;
  }
  const m = check.manifest;
  if (previous === m.version) throw new DaemonError("USAGE", `release ${m.version} is already the current one`);
  step("verified");
  makeDirs(c.dir, "releases directory", 0o755);
  // Left over by an apply killed while staging or switching: never named by `current`.
  for (const n of readdirSync(c.dir)) if (n.startsWith(".staging-") || n.startsWith(".current-")) rmSync(join(c.dir, n), { recursive: true, force: true });
  const target = join(c.dir, m.version);
  const staging = join(c.dir, `.staging-${m.version}-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging);
  copyTree(resolve(bundle), staging, () => step("staging"));
  // The copy must be what was verified (a file could change between the check and the copy).
  verifyRelease(staging, { keys: c.keys(), deviceClass: c.u.device_class, minCounter: c.state.committed().counter });
  step("staged");
  rmSync(target, { recursive: true, force: true });
  renameSync(staging, target);
  fsyncDir(c.dir);
  step("installed");
  c.state.setPending({ engine: "gatewarden", version: m.version, counter: m.counter, target: m.version, previous, time: new Date().toISOString() });
  step("pending");
  switchTo(c.dir, m.version);
  step("switched");
  await rec("apply", true, `Update ${m.version} (counter ${m.counter}) installed and switched to (was ${previous ?? "none"}); signed by ${check.key}`, { version: m.version, counter: m.counter, previous });
  restart(c.u.restart_command);
  step("restarted");
  const health = await healthCheck(loaded, c.u.health.deadline_ms, c.u.health.require_soc);
  step("judged");
  if (health.ok) {
    c.state.commit(m.counter, m.version);
    step("committed");
    c.state.clearPending();
    await remeasure(loaded, m.version);
    const message = `Update ${m.version} healthy after ${health.elapsed_ms} ms: committed; anti-rollback counter now ${m.counter}`;
    await rec("commit", true, message, { version: m.version, counter: m.counter, health: health.checks });
    return { ok: true, version: m.version, previous, message, health };
  }
  const failed = health.checks.filter((x) => !x.ok).map((x) => `${x.name}: ${x.detail}`).join("; ");
  const back = await rollBack(loaded, `failed its health check (${failed})`);
  return { ok: false, version: m.version, previous, message: back, health };
}

/** Undoes an uncommitted apply: `current` back to the previous release, restarted, recorded. */
export async function rollBack(loaded: HookSite, why = "rolled back by the operator"): Promise<string> {
  const c = ctx(loaded);
  const p = c.state.pending();
  if (!p || p.engine !== "gatewarden") {
    throw new DaemonError("RELEASE_ROLLBACK", `no uncommitted update to roll back: the committed release ${c.state.committed().version ?? "(none)"} stays (the anti-rollback counter never goes back)`);
  }
  const committed = c.state.committed();
  if (committed.version === p.version && committed.counter === p.counter) {
    // Killed between raising the counter and clearing the pending record: it is committed.
    c.state.clearPending();
    throw new DaemonError("RELEASE_ROLLBACK", `${p.version} is already committed (counter ${p.counter}); the anti-rollback counter never goes back`);
  }
  if (!p.previous || !existsSync(join(c.dir, p.previous, RELEASE_FILE))) throw new DaemonError("UPDATE_STATE", `cannot roll back ${p.version}: the previous release folder ${p.previous ?? "(none)"} is missing`);
  let restartError: string | undefined;
  if (currentVersion(c.dir) !== p.previous) switchTo(c.dir, p.previous);
  try {
    restart(c.u.restart_command);
  } catch (e) {
    restartError = describeError(e);
  }
  c.state.clearPending();
  const message = `Update ${p.version} ${why}: rolled back to ${p.previous}${restartError ? `; restart failed: ${restartError}` : ""}`;
  await loaded.audit(updateDraft({ engine: "gatewarden", stage: "rollback", ok: false, message, severity: 4, detail: { version: p.version, previous: p.previous } }));
  return message;
}

export function standaloneStatus(loaded: ConfigFile): Record<string, unknown> {
  const c = ctx(loaded);
  let names: string[] = [];
  try {
    names = readdirSync(c.dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") throw new DaemonError("UPDATE_STATE", `update.releases_dir ${c.dir} cannot be listed (${code === "ENOTDIR" ? "it is not a directory: ENOTDIR" : (code ?? (e as Error).message)})`);
  }
  const releases = names
    .filter((n) => !n.startsWith(".") && n !== "current")
    .map((n) => {
      try {
        const m = readSignedRelease(join(c.dir, n)).manifest;
        return { version: m.version, counter: m.counter };
      } catch {
        return { version: n, counter: null };
      }
    });
  return { current: currentVersion(c.dir), committed: c.state.committed(), pending: c.state.pending() ?? null, releases };
}
