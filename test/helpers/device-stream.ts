import type { KeyObject } from "node:crypto";
import { buildSigned, GENESIS_HASH, type Envelope } from "../../agent/core/envelope";
import type { EventClass } from "../../agent/core/events";

/** A device's event stream, chained and signed like the recorder does. */
export class DeviceStream {
  prev = GENESIS_HASH;
  seq = -1;
  boot = 1000;
  /** The wall time (ms) the next event is stamped with. */
  time = 1;
  constructor(
    readonly id: string,
    public key: KeyObject,
  ) {}
  next(cls: EventClass = "telemetry", unmapped?: Record<string, unknown>): Envelope {
    const { env } = buildSigned({ v: 1, device: this.id, boot: this.boot, seq: ++this.seq, time: this.time, mono: 1, class: cls, severity: 1, ocsf: { class_uid: 5001, activity_id: 2, message: "m", ...(unmapped ? { unmapped } : {}) }, prev: this.prev }, this.key);
    this.prev = env.hash;
    return env;
  }
  firstBoot(boot: number): Envelope {
    this.boot = boot;
    this.seq = -1;
    return this.next("system", { boot: { previous_boot: null, previous_last_seq: null } });
  }
  reboot(): Envelope {
    const pb = this.boot;
    const ps = this.seq;
    this.boot++;
    this.seq = -1;
    return this.next("system", { boot: { previous_boot: pb, previous_last_seq: ps } });
  }
}

