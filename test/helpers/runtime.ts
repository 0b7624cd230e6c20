import { controlCall } from "../../agent/core/control-client";
import type { OpcuaProcess } from "../../agent/opcua-process";
import type { Runtime } from "../../agent/runtime";
import type { opcuaSource } from "../../agent/sources/opcua";
import type { MqttForwarder } from "../../agent/sinks/mqtt";
import { until } from "./fixture";

export type OutboxBody = { class: string; ocsf: { class_uid: number; activity_id: number; message: string; finding_info?: { title?: string } } };

/** Every event body the in-process daemon has committed so far (pending ones flushed first). */
export function outboxBodies(rt: Runtime): OutboxBody[] {
  rt.recorder.flush();
  return rt.outbox.readAfter(0, 100_000).map((r) => JSON.parse(r.body) as OutboxBody);
}

/** Waits until the daemon's detection engine has taken `n` readings (asked over the control socket). */
export async function detectionReadings(rt: Runtime, n: number, timeoutMs: number): Promise<void> {
  let readings = 0;
  const end = Date.now() + timeoutMs;
  while (readings < n && Date.now() < end) {
    readings = ((await controlCall(rt.loaded.config.control.socket, "detection.status")) as { readings: number }).readings;
    if (readings < n) await new Promise((r) => setTimeout(r, 50));
  }
  if (readings < n) throw new Error(`the detectors took ${readings} readings in ${timeoutMs} ms, expected ${n}`);
}

/** Waits for a Detection Finding whose message matches. */
export async function findingFor(rt: Runtime, message: RegExp, timeoutMs: number): Promise<OutboxBody> {
  const find = () => outboxBodies(rt).find((b) => b.class === "finding" && b.ocsf.class_uid === 2004 && message.test(b.ocsf.message));
  await until(() => find() !== undefined, timeoutMs, `a finding matching ${message}`);
  return find()!;
}

/** The daemon's OPC UA process (the `opcua` source); fails the test when it is not running. */
export function opcuaOf(rt: Runtime): OpcuaProcess {
  const src = rt.source("opcua") as ReturnType<typeof opcuaSource> | undefined;
  if (!src) throw new Error("the daemon runs no OPC UA source");
  return src.process;
}

/** The daemon's MQTT forwarder (its `upstream` sink); throws when upstream is not configured. */
export function forwarderOf(rt: Runtime): MqttForwarder {
  const s = rt.sink("upstream");
  if (!s) throw new Error("no upstream sink: the config sets no upstream.url");
  return s as MqttForwarder;
}
