/** The Modbus proxy (and its poller and readings tap) as a source: events to the recorder, readings to the detectors. */
import type { Config } from "../config/schema";
import { describeError } from "../core/errors";
import { ModbusProxyService } from "../../protocols/modbus/service";
import { readPolicyFile } from "../../protocols/modbus/policy/schema";
import { tapPointsFrom } from "../../protocols/modbus/tap";
import { registerModbusStatus, registerTlsReload, registerWindowControl } from "../../protocols/modbus/window-control";
import type { RunningSource, SourceContext } from "./registry";

type Points = NonNullable<Config["points"]>;

/** Points with an explicit poll interval are also polled through the proxy's upstreams. */
const pollOf = (points: Points) =>
  tapPointsFrom(points).flatMap((p) => {
    const ms = points[p.id]?.poll_interval_ms;
    return ms === undefined ? [] : [{ ...p, interval_ms: ms }];
  });

export function modbusSource(ctx: SourceContext): RunningSource {
  const c = ctx.config;
  const m = c.modbus!;
  const frontRoles = ctx.windows.frontRoles();
  const svc: ModbusProxyService = new ModbusProxyService({
    config: m,
    events: ctx.events,
    readings: ctx.readings,
    points: tapPointsFrom(c.points ?? {}),
    poll: pollOf(c.points ?? {}),
    log: ctx.log,
    windowStatePath: m.windows.state_path,
    // The OPC UA front's roles share these windows; the OPC UA process hears of every change.
    ...(frontRoles ? { windowRoles: frontRoles } : {}),
    onWindows: (open) => ctx.windows.changed(open),
    ...(ctx.commands ? { wrapPdp: ctx.commands.wrapper(() => svc) } : {}),
  });
  return {
    name: "modbus",
    async start() {
      const bound = await svc.start();
      ctx.windows.store = svc.windows;
      ctx.windows.changed(svc.windows?.snapshot() ?? []);
      registerWindowControl(ctx.control, () => svc.windows);
      registerModbusStatus(ctx.control, () => svc.status());
      registerTlsReload(ctx.control, () => svc.reloadTls("control"));
      ctx.log.info({ listeners: bound }, "Modbus proxy listening.");
    },
    stop: () => svc.stop(),
    reload(next, trigger) {
      // The policy file is read (and checked) before anything changes.
      const nm = next.modbus;
      const policy = nm?.policy ?? (nm?.policy_file ? readPolicyFile(nm.policy_file) : undefined);
      const points = next.points ?? {};
      return () => {
        svc.reload({ policy, points: tapPointsFrom(points), poll: pollOf(points) });
        try {
          svc.reloadTls(trigger);
        } catch (e) {
          ctx.log.error({ err: describeError(e), trigger }, "TLS reload failed; the current material stays in use.");
        }
        return ["modbus policy"];
      };
    },
    health() {
      const s = svc.status();
      const down = s.upstreams.filter((u) => u.state === "down").map((u) => u.name);
      return { ok: s.running && !down.length, state: s.running ? "running" : "stopped", ...(down.length ? { detail: `upstream ${down.join(", ")} down` } : {}) };
    },
    status: () => svc.status(),
    closeWriteWindows: (by) => svc.windows?.closeWindow({}, by).length ?? 0,
    policyFor: (f) => svc.policyFor(f),
  };
}
