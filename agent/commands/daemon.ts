import { formatOpcuaProcess, type OpcuaProcessStatus } from "../../protocols/opcua/process-protocol";
import type { Command } from "commander";
import { loadConfig } from "../config/load";
import { refuseRootOverServiceState } from "../paths";
import { locateConfig } from "../config/locate";
import { controlCall, controlStream } from "../core/control-client";
import { createLogger } from "../log";
import { openOffline } from "../outbox/offline";
import { evictedPhrase } from "../events/recorder";
import { RECENT_EVENTS, Runtime, type ReloadReport } from "../runtime";
import { osUser } from "../core/os-user";
import { exitOnUncaught } from "../core/crash";
import { DaemonError } from "../core/errors";
import { SystemdNotifier } from "../systemd-notify";
import { report } from "./_output";

interface Opts {
  config?: string;
  json?: boolean;
}

export function registerDaemon(program: Command): void {
  program
    .command("run")
    .description("Run the daemon in the foreground (JSON-line logs on stdout; SIGTERM/SIGINT stop it cleanly, SIGHUP reloads as `gatewarden reload` does)")
    .option("--config <FILE>", "config file")
    .action(
      async (opts: Opts) => {
        // Signals are handled from the first moment: a SIGTERM during startup (the outbox
        // check can take a while on a large database) still stops cleanly once started.
        let stopRequested: string | undefined;
        let onSignal = (sig: string) => void (stopRequested ??= sig);
        process.once("SIGTERM", () => onSignal("SIGTERM"));
        process.once("SIGINT", () => onSignal("SIGINT"));
        // SIGHUP reloads (by default it would end the process): ignored until started.
        let onHup = (): void => {};
        process.on("SIGHUP", () => onHup());
        const loaded = loadConfig(locateConfig(opts.config));
        refuseRootOverServiceState(loaded.config.buffer.path);
        const log = createLogger(loaded.config.log.level);
        const rt = new Runtime(loaded, log);
        // An error nothing handled ends the process, recorded first: the SOC sees a crash, not a
        // run that merely went quiet (then systemd restarts the daemon).
        exitOnUncaught(log, "Gatewarden crashed on an error nothing handled.", (what) => rt.crashed(what));
        const systemd = SystemdNotifier.fromEnv(log);
        await rt.start();
        systemd?.ready(`serving as ${loaded.config.device.id}`);
        onHup = () => rt.reload("SIGHUP");
        await new Promise<void>((resolve) => {
          let stopping = false;
          onSignal = (sig: string) => {
            if (stopping) return;
            stopping = true;
            systemd?.stopping();
            void rt.stop(sig).finally(() => {
              systemd?.close();
              resolve();
            });
          };
          if (stopRequested) onSignal(stopRequested);
          // `gatewarden decommission` ends the daemon from within.
          void rt.ended.then(resolve);
        });
      },
    );

  program
    .command("reload")
    .description("Make the running daemon take a changed Modbus policy, points and site now (as SIGHUP does); a file that does not validate changes nothing and is named")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (opts: Opts) => {
        const { config } = loadConfig(locateConfig(opts.config));
        const r = (await controlCall(config.control.socket, "reload", { by: osUser() }, 30_000)) as ReloadReport;
        report(opts.json, r, () => `Reloaded: ${r.reloaded.join(", ") || "TLS material"}.${r.restart_needed.length ? `\nTake effect only after a restart: ${r.restart_needed.join(", ")}.` : ""}`);
      },
    );

  program
    .command("status")
    .description("Ask the running daemon for upstream state, outbox depth and age, rates and the last error")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (opts: Opts) => {
        const { config } = loadConfig(locateConfig(opts.config));
        const s = (await controlCall(config.control.socket, "status")) as StatusView;
        report(opts.json, s, () => formatStatus(s));
      },
    );

  const outbox = program.command("outbox").description("Inspect the outbox database");
  outbox
    .command("check")
    .description("Run SQLite's integrity check on the outbox and print its depth (with the daemon stopped: it holds the file while it runs; while it runs, `status` shows the depth)")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (opts: Opts) => {
        const { config } = loadConfig(locateConfig(opts.config));
        const held = openOffline(config.buffer.path, config.buffer.max_bytes, "gatewarden outbox check");
        const ob = held.outbox;
        try {
          const integrity = ob.integrityCheck();
          const stats = ob.stats();
          report(opts.json, { integrity, ...stats, head: ob.head() ?? null }, () => `integrity: ${integrity}\ndepth: ${stats.depth} events, ${stats.bytes} bytes (${stats.parked} parked, ${stats.quarantined} quarantined); files ${stats.file_bytes} of ${stats.budget_bytes} bytes`);
          if (integrity !== "ok") process.exitCode = 1;
        } finally {
          ob.db.close(); // a look writes nothing (no checkpoint)
          held.close();
        }
      },
    );

  const events = program.command("events").description("Look at recorded events");
  events
    .command("tail")
    .description("Print the most recent events from the running daemon; -f follows new ones")
    .option("--config <FILE>", "config file")
    .option("-n, --lines <N>", "how many recent events (0 to 1000)", lineCount, 10)
    .option("-f, --follow", "keep printing new events until interrupted")
    .option("--json", "one JSON envelope per line (default: a short line per event)")
    .action(
      async (opts: Opts & { lines: number; follow?: boolean }) => {
        const { config } = loadConfig(locateConfig(opts.config));
        const n = opts.lines;
        const print = (e: unknown) => process.stdout.write((opts.json ? JSON.stringify(e) : formatEvent(e as EventView)) + "\n");
        if (!opts.follow) {
          for (const e of (await controlCall(config.control.socket, "events.recent", { limit: n })) as unknown[]) print(e);
          return;
        }
        const ac = new AbortController();
        process.once("SIGINT", () => ac.abort());
        process.once("SIGTERM", () => ac.abort());
        await controlStream(config.control.socket, "events.tail", { limit: n }, print, { signal: ac.signal });
      },
    );
}

/** `-n`: a whole number of events, 0 to the daemon's memory of recent events. */
function lineCount(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > RECENT_EVENTS) throw new DaemonError("USAGE", `-n ${v}: give a whole number of events from 0 to ${RECENT_EVENTS}`);
  return Number(v);
}

interface EventView {
  boot: number;
  seq: number;
  time: number;
  class: string;
  severity: number;
  ocsf: { message?: string; class_uid?: number };
}

function formatEvent(e: EventView): string {
  return `${new Date(e.time).toISOString()} ${e.boot}:${e.seq} ${e.class.padEnd(9)} sev=${e.severity} ocsf=${e.ocsf.class_uid ?? "?"} ${e.ocsf.message ?? ""}`;
}

export interface StatusView {
  device: string;
  boot: number;
  version: string;
  uptime_s: number;
  upstream: { state: string; url: string | null; last_error: string | null; ack?: string; broker_acked?: Mark | null; soc_acked?: Mark | null };
  outbox: {
    depth: number | null;
    bytes: number | null;
    file_bytes: number | null;
    budget_bytes: number;
    parked: number | null;
    quarantined: number | null;
    oldest_unsent_age_s: number | null;
    pending_in_memory: number;
    storage: { state: string; mode: string; error: string | null; since: number | null; next_retry_ms: number | null };
  };
  rates: { events_in_per_s: number; events_out_per_s: number };
  storage: { bytes_written: number | null; bytes_per_event: number | null };
  counters: { evicted: number; evicted_sent?: number };
  last_error: string | null;
  detection?: { readings: number | null } | null;
  opcua?: OpcuaProcessStatus | null;
}

function formatStorage(o: StatusView["outbox"]): string {
  const st = o.storage;
  const where = st.mode === "memory" ? "in memory (the outbox file could not be opened)" : "on disk";
  if (st.state === "ok")
    return st.mode === "memory" ? "AT RISK: events are kept in memory only (the outbox file could not be opened at start); a restart or power cut loses every one not yet delivered" : `ok, ${where}`;
  return `FAILING since ${new Date(st.since ?? 0).toISOString()}, ${where}: ${st.error ?? "?"}; ${o.pending_in_memory} events waiting in memory, next retry in ${st.next_retry_ms ?? "-"} ms`;
}

type Mark = { boot: number; seq: number };
const mark = (m: Mark | null | undefined) => (m ? `${m.boot}:${m.seq}` : "-");

export function formatStatus(s: StatusView): string {
  return [
    `device      ${s.device} (boot ${s.boot}, version ${s.version}, up ${s.uptime_s} s)`,
    `upstream    ${s.upstream.state}${s.upstream.url ? ` ${s.upstream.url}` : ""}`,
    ...(s.upstream.ack ? [`  acked     broker ${mark(s.upstream.broker_acked)}, SOC ${s.upstream.ack === "soc" ? mark(s.upstream.soc_acked) : "- (upstream.ack: broker)"}`] : []),
    `outbox      ${s.outbox.depth} events, ${s.outbox.bytes} bytes; files ${s.outbox.file_bytes}/${s.outbox.budget_bytes} bytes; oldest unsent ${s.outbox.oldest_unsent_age_s ?? "-"} s; parked ${s.outbox.parked}; quarantined ${s.outbox.quarantined}`,
    `  storage   ${formatStorage(s.outbox)}`,
    `  evicted   ${evictedPhrase(s.counters.evicted, s.counters.evicted_sent ?? 0)} since start (buffer.max_bytes; named by loss records)`,
    `rates       in ${s.rates.events_in_per_s}/s, out ${s.rates.events_out_per_s}/s`,
    `storage     ${s.storage.bytes_written ?? "-"} bytes written since start, ${s.storage.bytes_per_event ?? "-"} per event`,
    `detectors   ${s.detection ? `${s.detection.readings ?? "-"} readings taken` : "- (no points configured)"}`,
    `opcua       ${s.opcua ? formatOpcuaProcess(s.opcua) : "- (not configured)"}`,
    `last error  ${s.last_error ?? "-"}`,
  ].join("\n");
}
