/**
 * Items that move between components: Source -> Detector -> Sink.
 * Security events have their own type (agent/core/events.ts) and go to the EventSink.
 */

/** One reading of a configured point, from polling or from the proxy's passive tap. */
export interface Reading {
  /** Point id as configured (`points.<id>`). */
  point: string;
  /** Engineering value after data type, word order, scale and offset. */
  value: number;
  /** Wall time of the reading in ms (from the source, never Date.now() inside a detector). */
  ts: number;
  /** Where it came from, e.g. `modbus:plc1/u1/hr/40` or `tap:plc1`. */
  source: string;
  quality: "good" | "bad";
}

/** A write the proxy allowed and forwarded; detectors correlate it with later anomalies. */
export interface WriteObservation {
  ts: number;
  /** Authenticated identity (certificate role / fingerprint, or source address). */
  identity: string;
  /** Upstream device name as configured. */
  device: string;
  unit: number;
  table: "coil" | "holding";
  address: number;
  values: readonly number[];
  /** Point ids covered by the written addresses, where known. */
  points: readonly string[];
}

/** Receives readings and write observations. Calls are synchronous and must not throw. */
export interface ReadingSink {
  reading(r: Reading): void;
  write?(w: WriteObservation): void;
}
