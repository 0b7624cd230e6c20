import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { OutLine, ProblemLine } from "../../agent/soc/verifier";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BUNDLE = join(ROOT, "dist", "gatewarden.cjs");

/** `node dist/gatewarden.cjs ARGS` as a child process (the real bundle), its output kept. */
export class CliProcess {
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output = "";

  /** `nodeArgs`: options for node itself, before the bundle (e.g. `--require` a test's fault injector). */
  constructor(args: readonly string[], nodeArgs: readonly string[] = []) {
    this.proc = spawn(process.execPath, [...nodeArgs, BUNDLE, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (d: Buffer) => {
      this.output += d.toString("utf8");
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    this.proc.stdout!.on("data", keep);
    this.proc.stderr!.on("data", keep);
    this.exited = new Promise((r) => this.proc.once("exit", (code, signal) => r({ code, signal })));
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.proc.kill(signal);
    return this.exited;
  }

  /** SIGTERM (a clean stop: for the daemon, its shutdown event and drain), SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.running) return this.exited;
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

/** `node dist/gatewarden.cjs run --config FILE` as a child process (the real bundle). */
export class Daemon extends CliProcess {
  constructor(cfgFile: string, nodeArgs: readonly string[] = []) {
    super(["run", "--config", cfgFile], nodeArgs);
  }
}

export interface OutboxCheck {
  integrity: string;
  depth: number;
  bytes: number;
  parked: number;
  quarantined: number;
  file_bytes: number;
  budget_bytes: number;
  head: { boot: number; seq: number; hash: string } | null;
}

/** `gatewarden outbox check --json` against a stopped daemon's outbox. */
export function outboxCheck(cfgFile: string): OutboxCheck {
  const r = spawnSync(process.execPath, [BUNDLE, "outbox", "check", "--json", "--config", cfgFile], { encoding: "utf8", timeout: 30_000 });
  try {
    return JSON.parse(r.stdout) as OutboxCheck;
  } catch {
    throw new Error(`outbox check printed no JSON (exit ${r.status}): ${r.stdout}${r.stderr}`);
  }
}

export function readOutLines(file: string): OutLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as OutLine);
}

export const isProblem = (l: OutLine): l is ProblemLine => "problem" in l;

type EventOut = Exclude<OutLine, ProblemLine>;

export interface Accounting {
  /** Verified event lines. */
  events: EventOut[];
  problems: ProblemLine[];
  /** "boot:seq" of event lines seen more than once (must stay empty: de-duplicated). */
  doubled: string[];
  /** Boots in order, each with the last seq it committed (as the next boot event says, or `finalLast`). */
  boots: { boot: number; last: number | undefined }[];
  /** Positions neither received nor named by a loss record, per boot ("boot:seq"). */
  missing: string[];
  /** Positions both received and named by a loss record. */
  lostAndReceived: string[];
  /**
   * Positions a `loss_record` line counts as lost (not in its `received`) whose event line came
   * before it: the SOC told of a loss it did not have (must stay empty).
   */
  heldButToldLost: string[];
  /** Positions named by more than one loss record. */
  lostTwice: string[];
  /** Every position a loss record names. */
  lost: Set<string>;
}

/**
 * What the SOC got, against what the device committed: for each boot, positions 0..last must
 * each be received exactly once or named by exactly one loss record, never both. The last seq
 * of a boot comes from the next boot's boot event (previous_last_seq); for the final boot the
 * caller gives it (e.g. the shutdown event's seq) or it is the highest received.
 */
export function account(lines: readonly OutLine[], finalLast?: number): Accounting {
  const events: EventOut[] = [];
  const problems: ProblemLine[] = [];
  const count = new Map<string, number>();
  const perBoot = new Map<number, number>();
  const declaredLast = new Map<number, number>();
  const heldButToldLost: string[] = [];
  for (const l of lines) {
    if (isProblem(l)) {
      problems.push(l);
      if (l.problem === "loss_record") heldButToldLost.push(...toldLost(l).filter((k) => count.has(k)));
      continue;
    }
    events.push(l);
    const k = `${l.boot}:${l.seq}`;
    count.set(k, (count.get(k) ?? 0) + 1);
    perBoot.set(l.boot, Math.max(perBoot.get(l.boot) ?? -1, l.seq));
    const b = (l.ocsf.unmapped as { boot?: { previous_boot?: number | null; previous_last_seq?: number | null } } | undefined)?.boot;
    if (l.seq === 0 && l.class === "system" && b?.previous_boot != null && b.previous_last_seq != null) declaredLast.set(b.previous_boot, b.previous_last_seq);
  }
  const lost = new Set<string>();
  const lostTwice: string[] = [];
  for (const p of problems) {
    if (p.problem !== "loss_record") continue;
    for (const r of (p.ranges ?? []) as [number, number, number][]) {
      for (let s = r[1]; s <= r[2]; s++) {
        const k = `${r[0]}:${s}`;
        if (lost.has(k)) lostTwice.push(k);
        lost.add(k);
        perBoot.set(r[0], Math.max(perBoot.get(r[0]) ?? -1, s));
      }
    }
  }
  const bootIds = [...new Set([...perBoot.keys(), ...declaredLast.keys()])].sort((a, b) => a - b);
  const boots = bootIds.map((boot, i) => ({ boot, last: declaredLast.get(boot) ?? (i === bootIds.length - 1 ? (finalLast ?? perBoot.get(boot)) : perBoot.get(boot)) }));
  const missing: string[] = [];
  const lostAndReceived: string[] = [];
  for (const { boot, last } of boots) {
    for (let s = 0; s <= (last ?? -1); s++) {
      const k = `${boot}:${s}`;
      const got = count.has(k);
      if (!got && !lost.has(k)) missing.push(k);
      if (got && lost.has(k)) lostAndReceived.push(k);
    }
  }
  const doubled = [...count].filter(([, n]) => n > 1).map(([k]) => k);
  return { events, problems, doubled, boots, missing, lostAndReceived, heldButToldLost, lostTwice, lost };
}

/** "boot:seq" of the positions a `loss_record` line names and does not say were received. */
function toldLost(p: ProblemLine): string[] {
  const held = new Set<string>();
  for (const [b, f, l] of ((p.received as { ranges?: [number, number, number][] } | undefined)?.ranges ?? [])) for (let s = f; s <= l; s++) held.add(`${b}:${s}`);
  const out: string[] = [];
  for (const [b, f, l] of (p.ranges ?? []) as [number, number, number][]) for (let s = f; s <= l; s++) if (!held.has(`${b}:${s}`)) out.push(`${b}:${s}`);
  return out;
}

/** Problem kinds other than those listed, as short strings (for readable assertion failures). */
export function unexpectedProblems(a: Accounting, allowed: readonly string[]): string[] {
  return a.problems.filter((p) => !allowed.includes(p.problem)).map((p) => `${p.problem} boot=${p.boot} ${p.first}..${p.last}: ${p.detail}`);
}
