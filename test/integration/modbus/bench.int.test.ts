/** The benchmark and load runners work (tiny durations; the figures themselves are not checked). */
import { describe, expect, it } from "vitest";
import { benchModbus } from "../../../build/bench-modbus";
import { loadModbus } from "../../../build/load-modbus";

describe("modbus bench and load runners", () => {
  it("benchModbus measures direct, blind pipe, Gatewarden in two configurations and commissioning mode", async () => {
    const r = (await benchModbus({ durationMs: 150, warmupMs: 50, rounds: 1, clients: [2], codec: false })) as {
      results: Record<string, Record<string, { rtt_per_s: number }>>;
      commissioning_printed: Record<string, Record<string, { lines: number; requests: number; answered_while_measured: number }>>;
    };
    for (const path of ["direct", "blind_pipe", "blind_pipe_process", "gatewarden_defaults", "gatewarden_matched", "commissioning_defaults", "commissioning_matched"]) expect(r.results.clients_2![path]!.rtt_per_s).toBeGreaterThan(0);
    // Commissioning mode printed (or counted on a line) every request it answered.
    for (const printed of Object.values(r.commissioning_printed.clients_2!)) {
      expect(printed.answered_while_measured).toBeGreaterThan(0);
      expect(printed.requests).toBeGreaterThanOrEqual(printed.answered_while_measured);
    }
  });
  it("loadModbus keeps idle connections open and the reference client served under a flood", async () => {
    const r = (await loadModbus({ durationMs: 600, idle: 50 })) as { idle_connections: { open: number; closed_during_run: number }; reference_client_10hz: { polls: number }; flood: { answered: number } };
    expect(r.idle_connections).toMatchObject({ open: 50, closed_during_run: 0 });
    expect(r.reference_client_10hz.polls).toBeGreaterThanOrEqual(1);
    expect(r.flood.answered).toBeGreaterThan(0);
  });
});
