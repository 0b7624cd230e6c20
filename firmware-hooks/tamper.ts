import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { z } from "zod";
import { describeError } from "../agent/core/errors";
import { OcsfClass } from "../agent/core/events";
import type { EventSink, SeverityId } from "../agent/core/events";

/**
 * Tamper inputs: a cabinet door switch or any contact, read from a sysfs value file, a GPIO
 * character-device line (through libgpiod's `gpioget CHIP LINE`) or a command's output, polled
 * every `poll_ms` and debounced (a new value counts once it has held for `debounce_ms`). Each
 * opening and closing is a signed event; a door opening outside a maintenance window is a finding.
 */
const severity = z.number().int().min(1).max(5);
const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, "HH:MM");

export const tamperSchema = z.strictObject({
  inputs: z
    .array(
      z.strictObject({
        name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/),
        source: z.union([
          z.strictObject({ file: z.string().min(1) }),
          z.strictObject({ gpio: z.strictObject({ chip: z.string().min(1), line: z.number().int().min(0).max(1023) }) }),
          z.strictObject({ command: z.array(z.string().min(1)).min(1) }),
        ]),
        /** The value (trimmed text) that means "open"; anything else is "closed". */
        open_value: z.string().default("1"),
        debounce_ms: z.number().int().min(0).max(60_000).default(200),
        poll_ms: z.number().int().min(20).max(60_000).default(100),
        severity_open: severity.default(3),
        severity_close: severity.default(1),
        /** A door: opening outside a maintenance window is a finding (severity 4). */
        door: z.boolean().default(true),
      }),
    )
    .max(32)
    .default([]),
  /** Maintenance windows in the gateway's local time; days 0 (Sunday) .. 6. */
  maintenance: z.array(z.strictObject({ days: z.array(z.number().int().min(0).max(6)).min(1).default([0, 1, 2, 3, 4, 5, 6]), from: hhmm, to: hhmm })).max(32).default([]),
});
export type TamperConfig = z.output<typeof tamperSchema>;
type Input = TamperConfig["inputs"][number];

/** Debounce: a reading changes the state once it has held for `ms`. Pure, for tests. */
export class Debouncer {
  state: boolean | undefined;
  private candidate: boolean | undefined;
  private since = 0;

  constructor(private readonly ms: number) {}

  /** Returns the new state when it changes (the first reading sets it). */
  feed(value: boolean, now: number): boolean | undefined {
    if (this.state === undefined) {
      this.state = value;
      return value;
    }
    if (value === this.state) {
      this.candidate = undefined;
      return undefined;
    }
    if (this.candidate !== value) {
      this.candidate = value;
      this.since = now;
    }
    if (now - this.since >= this.ms) {
      this.state = value;
      this.candidate = undefined;
      return value;
    }
    return undefined;
  }
}

export function inMaintenance(windows: TamperConfig["maintenance"], d: Date): boolean {
  const min = d.getHours() * 60 + d.getMinutes();
  const at = (s: string) => Number(s.slice(0, 2)) * 60 + Number(s.slice(3));
  return windows.some((w) => {
    const from = at(w.from);
    const to = at(w.to);
    if (from <= to) return w.days.includes(d.getDay()) && min >= from && min < to;
    // Across midnight: the part after midnight belongs to the previous day's window.
    return (w.days.includes(d.getDay()) && min >= from) || (w.days.includes((d.getDay() + 6) % 7) && min < to);
  });
}

function read(input: Input): Promise<string> {
  const s = input.source;
  if ("file" in s) return readFile(s.file, "utf8").then((t) => t.trim());
  const argv = "gpio" in s ? ["gpioget", s.gpio.chip, String(s.gpio.line)] : s.command;
  return new Promise((resolve, reject) =>
    execFile(argv[0]!, argv.slice(1), { timeout: 5000, maxBuffer: 4096 }, (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))),
  );
}

export class TamperWatch {
  private readonly timers: NodeJS.Timeout[] = [];
  readonly states = new Map<string, { open: boolean | null; since: string | null; error: string | null }>();

  constructor(
    private readonly config: TamperConfig,
    private readonly sink: EventSink,
    private readonly log: Logger,
  ) {}

  start(): void {
    for (const input of this.config.inputs) {
      const deb = new Debouncer(input.debounce_ms);
      this.states.set(input.name, { open: null, since: null, error: null });
      let busy = false;
      let failing = false;
      const poll = async () => {
        if (busy) return;
        busy = true;
        try {
          const v = await read(input);
          if (failing) this.log.info({ input: input.name }, "Tamper input readable again.");
          failing = false;
          const changed = deb.feed(v === input.open_value, Date.now());
          if (changed !== undefined) this.change(input, changed);
        } catch (e) {
          // An input that cannot be read is itself suspicious (cut wire, removed sensor): once per outage.
          if (!failing) this.unreadable(input, describeError(e));
          failing = true;
        } finally {
          busy = false;
        }
      };
      void poll();
      const t = setInterval(() => void poll(), input.poll_ms);
      t.unref();
      this.timers.push(t);
    }
  }

  private change(input: Input, open: boolean): void {
    const prev = this.states.get(input.name)!;
    const first = prev.open === null;
    this.states.set(input.name, { open, since: new Date().toISOString(), error: null });
    if (first && !open) return; // closed at start: the normal state
    const outside = open && input.door && !inMaintenance(this.config.maintenance, new Date());
    const finding = outside;
    const sev = (finding ? Math.max(4, input.severity_open) : open ? input.severity_open : input.severity_close) as SeverityId;
    this.sink.record({
      class: finding ? "finding" : "audit",
      severity: sev,
      ocsf: {
        class_uid: OcsfClass.DetectionFinding,
        activity_id: 1,
        message: `Tamper input ${input.name} ${open ? "opened" : "closed"}${first ? " (at start)" : ""}${outside ? " outside a maintenance window" : open && input.door ? " during a maintenance window" : ""}`,
        finding_info: { title: `Tamper input ${open ? "open" : "closed"}`, uid: `tamper:${input.name}`, types: ["tamper"] },
        unmapped: { tamper: { input: input.name, state: open ? "open" : "closed", door: input.door, maintenance: open ? !outside : null } },
      },
    });
  }

  private unreadable(input: Input, err: string): void {
    this.states.set(input.name, { ...this.states.get(input.name)!, error: err });
    this.sink.record({
      class: "finding",
      severity: 3,
      ocsf: { class_uid: OcsfClass.DetectionFinding, activity_id: 1, message: `Tamper input ${input.name} cannot be read: ${err}`, finding_info: { title: "Tamper input unreadable", uid: `tamper:${input.name}:unreadable`, types: ["tamper"] }, unmapped: { tamper: { input: input.name, state: "unreadable" } } },
    });
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
  }
}
