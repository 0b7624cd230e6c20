import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { DaemonError, describeError, isDaemonError } from "../agent/core/errors";
import { updateDraft, type ConfigFile, type HookSite, type Recorded } from "./site";
import { acceptDraft, acceptIntegrity } from "./integrity";
import type { UpdateConfig } from "./config";
import { ENGINES, type EngineSpec } from "./engines";
import { healthCheck, type HealthVerdict } from "./health";
import { loadReleasePublicKeys, verifyRelease } from "./release";
import { UpdateState } from "./state";

export interface HookResult {
  exitCode: number;
  message: string;
  event?: Recorded;
  health?: HealthVerdict;
}

export function updateConfig(loaded: ConfigFile): UpdateConfig {
  const u = loaded.config.update;
  if (!u) throw new DaemonError("CONFIG_INCOMPLETE", `${loaded.file} has no update section (update.device_class, update.release_keys): updates are refused`);
  return u;
}

/** `gatewarden update hook <engine> <stage>`: one step of an engine's install, judged and recorded. */
export async function runHook(loaded: HookSite, engineName: string, stage: string, o: { bundle?: string; env?: NodeJS.ProcessEnv } = {}): Promise<HookResult> {
  const engine = ENGINES[engineName];
  if (!engine) throw new DaemonError("USAGE", `unknown update engine ${engineName} (rauc, swupdate or mender)`);
  const action = engine.stages[stage];
  if (!action) throw new DaemonError("USAGE", `${engineName} has no stage ${stage} (${Object.keys(engine.stages).join(", ")})`);
  const env = o.env ?? process.env;
  const u = updateConfig(loaded);
  const state = new UpdateState(u.state_dir);
  const rec = (ok: boolean, message: string, detail: Record<string, unknown> = {}, severity?: 1 | 2 | 3 | 4) =>
    loaded.audit(updateDraft({ engine: engineName, stage, ok, message, detail, severity }));

  switch (action) {
    case "verify": {
      const dir = o.bundle ?? engine.bundleDir(env);
      if (!dir) throw new DaemonError("USAGE", `${engineName} ${stage}: no bundle directory (give --bundle DIR${engineName === "rauc" ? " or run under RAUC" : " or set GATEWARDEN_RELEASE_DIR"})`);
      try {
        const committed = state.committed();
        const r = verifyRelease(resolve(dir), { keys: loadReleasePublicKeys(u.release_keys), deviceClass: u.device_class, minCounter: committed.counter, engineFiles: engine.engineFiles });
        state.setPending({ engine: engineName, version: r.manifest.version, counter: r.manifest.counter, target: raucTarget(env), previous: committed.version, time: new Date().toISOString() });
        const message = `Update ${r.manifest.version} (counter ${r.manifest.counter}) accepted at ${engineName} ${stage}: signed by ${r.key}`;
        return { exitCode: 0, message, event: await rec(true, message, { version: r.manifest.version, counter: r.manifest.counter, key: r.key, installed_counter: committed.counter }) };
      } catch (e) {
        if (!isDaemonError(e) || !/^(RELEASE_|UPDATE_STATE|KEY_)/.test(e.code)) throw e;
        const message = `Update refused at ${engineName} ${stage} (${e.code}): ${e.message}`;
        return { exitCode: engine.rejectCode(stage), message, event: await rec(false, message, { reason: e.code }) };
      }
    }
    case "record": {
      const p = state.pending();
      const message = `Update ${p?.version ?? "(unknown)"}: ${engineName} ${stage} done${env.RAUC_SLOT_NAME ? ` for slot ${env.RAUC_SLOT_NAME}` : ""}`;
      return { exitCode: 0, message, event: await rec(true, message, { version: p?.version ?? null, slot: env.RAUC_SLOT_NAME ?? null }, 1) };
    }
    case "commit": {
      const p = state.pending();
      if (!p) return { exitCode: 0, message: "no pending update to commit" };
      state.commit(p.counter, p.version);
      state.clearPending();
      await remeasure(loaded, p.version);
      const message = `Update ${p.version} committed; anti-rollback counter now ${p.counter}`;
      return { exitCode: 0, message, event: await rec(true, message, { version: p.version, counter: p.counter }) };
    }
    case "rolled_back":
    case "failed": {
      const p = state.pending();
      state.clearPending();
      const message = `Update ${p?.version ?? "(unknown)"} ${action === "failed" ? "failed" : "rolled back"} (${engineName} ${stage})`;
      return { exitCode: 0, message, event: await rec(false, message, { version: p?.version ?? null }, 3) };
    }
    case "health":
      return judge(loaded, u, engineName, engine, state, rec);
  }
}

async function judge(
  loaded: HookSite,
  u: UpdateConfig,
  engineName: string,
  engine: EngineSpec,
  state: UpdateState,
  rec: (ok: boolean, message: string, detail?: Record<string, unknown>, severity?: 1 | 2 | 3 | 4) => Promise<Recorded>,
): Promise<HookResult> {
  const p = state.pending();
  if (!p) return { exitCode: 0, message: "no pending update to judge" };
  if (engineName === "rauc" && p.target) {
    const booted = raucBooted();
    if (booted && booted !== p.target) {
      state.clearPending();
      const message = `Update ${p.version} was not booted (running slot ${booted}, not ${p.target}): the bootloader fell back`;
      return { exitCode: 0, message, event: await rec(false, message, { version: p.version, booted, target: p.target }, 3) };
    }
  }
  const health = await healthCheck(loaded, u.health.deadline_ms, u.health.require_soc);
  const failed = health.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
  // Mender commits or rolls back itself on the script's exit status (ArtifactCommit_Enter
  // raises the counter); RAUC and SWUpdate are told here.
  const selfCommitting = !engine.commit;
  if (health.ok) {
    const cmd = selfCommitting ? undefined : (u.commit_command ?? engine.commit);
    if (cmd) {
      try {
        run(cmd);
      } catch (e) {
        const message = `Update ${p.version} healthy, but the commit failed: ${describeError(e)}`;
        return { exitCode: 1, message, health, event: await rec(false, message, { version: p.version, health: health.checks }, 4) };
      }
    }
    if (!selfCommitting) {
      state.commit(p.counter, p.version);
      state.clearPending();
      await remeasure(loaded, p.version);
    }
    const message = selfCommitting
      ? `Update ${p.version} healthy after ${health.elapsed_ms} ms`
      : `Update ${p.version} healthy after ${health.elapsed_ms} ms: committed (${cmd!.join(" ")}); anti-rollback counter now ${p.counter}`;
    return { exitCode: 0, message, health, event: await rec(true, message, { version: p.version, counter: p.counter, health: health.checks }) };
  }
  const cmd = selfCommitting ? undefined : (u.rollback_command ?? engine.rollback);
  let rollbackError: string | undefined;
  if (cmd) {
    try {
      run(cmd);
    } catch (e) {
      rollbackError = describeError(e);
    }
  }
  if (!selfCommitting) state.clearPending();
  const message = `Update ${p.version} failed its health check (${failed.join("; ")}): ${cmd ? `rolled back (${cmd.join(" ")})` : `${engineName} rolls back`}${rollbackError ? `; the roll-back command failed: ${rollbackError}` : ""}`;
  return { exitCode: 1, message, health, event: await rec(false, message, { version: p.version, health: health.checks, ...(rollbackError ? { rollback_error: rollbackError } : {}) }, 4) };
}

/** A committed update changed the measured files on purpose: they become the integrity manifest (audited). */
export async function remeasure(loaded: HookSite, version: string): Promise<void> {
  if (!loaded.config.integrity) return;
  await acceptIntegrity(loaded, (r) => loaded.audit(acceptDraft(r, `update ${version}`)));
}

/** Runs an engine or restart command (argv, no shell); UPDATE_STATE with its stderr when it fails. */
export function run(cmd: string[]): void {
  try {
    execFileSync(cmd[0]!, cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new DaemonError("UPDATE_STATE", `${cmd.join(" ")} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** The bootname RAUC is writing (from the handler environment), if any. */
function raucTarget(env: NodeJS.ProcessEnv): string | null {
  const n = env.RAUC_TARGET_SLOTS?.trim().split(/\s+/)[0];
  return (n && env[`RAUC_SLOT_BOOTNAME_${n}`]) || null;
}

function raucBooted(): string | undefined {
  try {
    const s = JSON.parse(execFileSync("rauc", ["status", "--output-format=json"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 30_000 })) as { booted?: string };
    return s.booted;
  } catch {
    return undefined;
  }
}
