import { createPublicKey, type KeyObject } from "node:crypto";
import { closeSync, existsSync, fsyncSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import type { Config } from "./config/schema";
import { DaemonError } from "./core/errors";
import { fingerprint } from "./core/keys";
import { farewellDraft } from "./keys/key-events";
import { pendingKeyPath, publicKeyPath } from "./keys/rotation";
import type { Recorder } from "./events/recorder";
import type { Outbox } from "./outbox/store";
import type { RunningSink } from "./sinks/registry";
import { VERSION } from "./version";

/** What `decommission` needs of the running daemon (runtime.ts). */
export interface DecommissionParts {
  config: Config;
  configFile: string;
  key: KeyObject;
  recorder: Recorder;
  outbox: Outbox;
  /** The `upstream` sink that carries events to the SOC, when configured. */
  sink: RunningSink | undefined;
  /** Stops every source and component: nothing but the farewell is recorded after it. */
  stopProducing(): Promise<void>;
  /** Stops the daemon, keeping its files (the farewell could not be delivered). */
  stop(reason: string): Promise<void>;
  /** Closes the sinks, the outbox and its lock; then `end` stops the daemon. */
  release(): Promise<void>;
  end(): void;
}

export interface DecommissionResult {
  device: string;
  fingerprint: string;
  boot: number;
  farewell_seq: number;
  wiped: string[];
}

/** How often delivery is checked while waiting (the forwarder sends on its own). */
const POLL_MS = 50;

/** The longest wait for the SOC's acknowledgements (24 h): each is a timer, and Node's timers end at 2^31-1 ms. */
export const MAX_DECOMMISSION_TIMEOUT_MS = 86_400_000;

/**
 * `gatewarden decommission`, run by the daemon:
 *   1. everything recorded before the request is acknowledged (by the SOC with
 *      upstream.ack: soc): otherwise NOT_DELIVERED, and nothing changes;
 *   2. every component stops and the signed farewell is committed as the last event; once it
 *      is acknowledged too,
 *   3. the outbox, keys and state files are wiped and the daemon ends.
 * A farewell not acknowledged within the timeout stops the daemon with everything kept
 * (NOT_DELIVERED): started again, it delivers the farewell, and the SOC then reports its new
 * boot as `retired_device`, so run decommission again to finish the wipe.
 */
export async function decommission(p: DecommissionParts, o: { by: string; timeoutMs: number }): Promise<DecommissionResult> {
  const c = p.config;
  const fwd = p.sink;
  if (!fwd) throw new DaemonError("CONFIG_INCOMPLETE", `${p.configFile} sets no upstream.url and upstream.soc_public_key: the outbox cannot be flushed to the SOC, so nothing was wiped`);
  const by = c.upstream.ack === "soc" ? "the SOC" : "the broker (upstream.ack: broker)";
  p.recorder.flush();
  if (!(await delivered(p.outbox, p.outbox.lastCommittedId, o.timeoutMs))) {
    throw new DaemonError("NOT_DELIVERED", `${p.outbox.stats().depth} events in the outbox were not acknowledged by ${by} within ${o.timeoutMs} ms (upstream ${fwd.state}${fwd.lastError ? `: ${fwd.lastError}` : ""}); nothing was wiped and the daemon goes on`);
  }
  await p.stopProducing();
  const fp = fingerprint(createPublicKey(p.key));
  const env = p.recorder.farewell(farewellDraft({ by: o.by, fingerprint: fp, reason: "decommission" }, VERSION));
  if (!(await delivered(p.outbox, p.outbox.lastCommittedId, o.timeoutMs))) {
    // After this answer is written: stopping closes the control socket.
    setImmediate(() => void p.stop("decommission: the farewell was not acknowledged"));
    throw new DaemonError(
      "NOT_DELIVERED",
      `the farewell (${env.boot}:${env.seq}) was not acknowledged by ${by} within ${o.timeoutMs} ms; the daemon stopped and kept its keys and outbox. Started again it delivers the farewell (the SOC then retires the device and reports its new boot as retired_device); run decommission again to wipe`,
    );
  }
  await p.release();
  const wiped = wipe(c);
  setImmediate(() => p.end());
  return { device: c.device.id, fingerprint: fp, boot: env.boot, farewell_seq: env.seq, wiped };
}

/** Waits until no row up to `id` is left in the outbox (sent and acknowledged), or the timeout. */
async function delivered(outbox: Outbox, id: number, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const oldest = outbox.oldestId();
    if (oldest === undefined || oldest > id) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** The files a decommissioned gateway must not keep: keys, the outbox and the daemon's state. */
function wipe(c: Config): string[] {
  const ob = c.buffer.path;
  const keys = [c.device.key, pendingKeyPath(c.device.key)];
  const files = [...keys, publicKeyPath(c.device.key), ob, `${ob}-wal`, `${ob}-shm`, `${ob}-journal`, `${ob}.head`, `${ob}.lock`, `${ob}.lock-journal`];
  files.push(c.detection.state_path);
  if (c.modbus) files.push(c.modbus.windows.state_path);
  if (c.commands) files.push(c.commands.state_path);
  const out: string[] = [];
  for (const f of files) {
    if (!existsSync(f)) continue;
    // Private keys are overwritten before they are unlinked (on flash, wear levelling may keep a copy).
    if (keys.includes(f)) overwrite(f);
    rmSync(f, { force: true });
    out.push(f);
  }
  return out;
}

function overwrite(f: string): void {
  const fd = openSync(f, "r+");
  try {
    writeSync(fd, Buffer.alloc(statSync(f).size));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
