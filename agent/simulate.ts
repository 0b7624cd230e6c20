import { OcsfClass } from "./core/events";
import type { EventDraft, EventSink } from "./core/events";

/**
 * Synthetic events for the demo and end-to-end checks (`simulate.events_per_s`). Every one is
 * marked `simulated: true`. The mix mirrors a busy site: mostly telemetry, some audit records,
 * a few findings.
 */
export class SimulatedSource {
  private timer: NodeJS.Timeout | undefined;
  private n = 0;

  constructor(
    private readonly ratePerS: number,
    private readonly sink: EventSink,
  ) {}

  start(): void {
    if (this.ratePerS <= 0) return;
    const tickMs = 10;
    let carry = 0;
    this.timer = setInterval(() => {
      carry += (this.ratePerS * tickMs) / 1000;
      while (carry >= 1) {
        carry--;
        this.sink.record(simulatedDraft(this.n++));
      }
    }, tickMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

export function simulatedDraft(n: number): EventDraft {
  const r = n % 20;
  if (r === 0)
    return {
      class: "finding",
      severity: 4,
      ocsf: {
        class_uid: OcsfClass.DetectionFinding,
        activity_id: 1,
        message: `Simulated finding #${n}: write to holding register 40010 outside its bounds`,
        finding_info: { uid: `sim-${n}`, title: "Simulated finding", types: ["Simulation"] },
        unmapped: { simulated: true, n },
      },
    };
  if (r < 4)
    return {
      class: "audit",
      severity: 1,
      ocsf: { class_uid: OcsfClass.NetworkActivity, activity_id: 6, message: `Simulated allowed write #${n}`, unmapped: { simulated: true, n } },
    };
  return {
    class: "telemetry",
    severity: 1,
    ocsf: { class_uid: OcsfClass.DeviceInventoryInfo, activity_id: 2, message: `Simulated reading #${n}`, unmapped: { simulated: true, n, value: Math.round(Math.sin(n / 50) * 1000) / 100 } },
  };
}
