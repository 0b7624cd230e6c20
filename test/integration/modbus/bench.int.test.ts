/** The benchmark and load runners work (tiny durations; the figures themselves are not checked). */
import { describe, expect, it } from "vitest";
import { benchModbus, roundOrder } from "../../../build/bench-modbus";
import { loadModbus } from "../../../build/load-modbus";

describe("modbus bench and load runners", () => {
  it("benchModbus measures direct, blind pipe, Gatewarden in two configurations and as a process, and commissioning mode", async () => {
    const r = (await benchModbus({ durationMs: 150, warmupMs: 50, rounds: 1, clients: [2], codec: false })) as {
      results: Record<string, Record<string, { rtt_per_s: number; cpu_us_per_round_trip: number | null }>>;
      commissioning_printed: Record<string, Record<string, { lines: number; requests: number; answered_while_measured: number }>>;
      printing_cost: Record<string, { throughput_vs_daemon_process: number; cpu_us_added_per_round_trip: number | null }>;
    };
    for (const path of ["direct", "blind_pipe", "blind_pipe_process", "gatewarden_defaults", "gatewarden_matched", "gatewarden_matched_process", "commissioning_defaults", "commissioning_matched"]) expect(r.results.clients_2![path]!.rtt_per_s).toBeGreaterThan(0);
    // The path under test's CPU time is measured for every path but the direct one (the load's).
    for (const path of ["blind_pipe", "blind_pipe_process", "gatewarden_matched", "gatewarden_matched_process", "commissioning_matched"]) expect(r.results.clients_2![path]!.cpu_us_per_round_trip).toBeGreaterThan(0);
    expect(r.printing_cost.clients_2!.throughput_vs_daemon_process).toBeGreaterThan(0);
    expect(Number.isFinite(r.printing_cost.clients_2!.cpu_us_added_per_round_trip)).toBe(true);
    // Commissioning mode printed (or counted on a line) every request it answered.
    for (const printed of Object.values(r.commissioning_printed.clients_2!)) {
      expect(printed.answered_while_measured).toBeGreaterThan(0);
      expect(printed.requests).toBeGreaterThanOrEqual(printed.answered_while_measured);
    }
  });
  it("every round measures each path once, each proxy within the block of the pipe of its placement, in an order that changes", () => {
    const paths = ["direct", "blind_pipe", "gatewarden_defaults", "gatewarden_matched", "blind_pipe_process", "gatewarden_matched_process", "commissioning_matched", "commissioning_defaults"];
    for (let r = 0; r < 4; r++) {
      const o = roundOrder(r);
      expect([...o].sort()).toEqual([...paths].sort());
      const at = (n: string) => o.indexOf(n);
      // The process block is contiguous: commissioning is measured next to the pipe process and the daemon process.
      expect(Math.max(at("blind_pipe_process"), at("gatewarden_matched_process"), at("commissioning_matched"), at("commissioning_defaults")) - Math.min(at("blind_pipe_process"), at("gatewarden_matched_process"), at("commissioning_matched"), at("commissioning_defaults"))).toBe(3);
    }
    expect(roundOrder(1)).not.toEqual(roundOrder(0));
    expect(roundOrder(1).indexOf("commissioning_matched")).not.toBe(roundOrder(0).indexOf("commissioning_matched"));
  });
  it("loadModbus keeps idle connections open and the reference client served under a flood", async () => {
    const r = (await loadModbus({ durationMs: 600, idle: 50 })) as { idle_connections: { open: number; closed_during_run: number }; reference_client_10hz: { polls: number }; flood: { answered: number } };
    expect(r.idle_connections).toMatchObject({ open: 50, closed_during_run: 0 });
    expect(r.reference_client_10hz.polls).toBeGreaterThanOrEqual(1);
    expect(r.flood.answered).toBeGreaterThan(0);
  });
});
