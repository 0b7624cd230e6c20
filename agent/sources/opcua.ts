/**
 * The OPC UA client and front as a source, in their own process (agent/opcua-process.ts):
 * drafts come back to be signed here, readings go to the detectors, commands are forwarded.
 */
import { DaemonError } from "../core/errors";
import { osUser } from "../core/os-user";
import { OpcuaProcess } from "../opcua-process";
import { FORWARDED } from "../../protocols/opcua/process-protocol";
import type { RunningSource, SourceContext } from "./registry";

export function opcuaSource(ctx: SourceContext): RunningSource & { readonly process: OpcuaProcess } {
  const c = ctx.config;
  const points = Object.entries(c.points ?? {}).flatMap(([id, p]) => ("opcua" in p.source && p.poll_interval_ms !== undefined ? [{ id, source: p.source.opcua, interval_ms: p.poll_interval_ms }] : []));
  const proc = new OpcuaProcess({ config: c.opcua!, deviceId: c.device.id, points, events: ctx.events, readings: ctx.readings, log: ctx.log });
  // The front's roles use the Modbus proxy's write windows, or a store of their own without it.
  const roles = ctx.windows.frontRoles();
  const own = roles && !ctx.windows.store && !c.modbus ? ctx.windows.standalone(roles, ctx.events, ctx.control) : undefined;
  ctx.windows.watch((open) => proc.setWindows(open));
  return {
    name: "opcua",
    process: proc,
    async start() {
      await proc.start();
      ctx.control.handle("opcua.status", () => proc.opcuaStatus());
      for (const cmd of FORWARDED) {
        if (cmd === "opcua.status") continue;
        ctx.control.handle(cmd, (args) => {
          if (cmd !== "opcua.pki.list" && typeof args.thumbprint !== "string" && cmd !== "opcua.pki.renew") throw new DaemonError("CONTROL_BAD_REQUEST", `${cmd} needs a thumbprint`);
          return proc.call(cmd, { ...args, by: typeof args.by === "string" ? args.by : osUser() });
        });
      }
    },
    stop: async () => {
      own?.dispose();
      await proc.stop();
    },
    health() {
      const s = proc.status();
      return { ok: s.state === "running", state: s.state, ...(s.last_exit ? { detail: `last exit ${s.last_exit.at}: ${s.last_exit.reason}` } : {}) };
    },
    status: () => proc.status(),
    ...(own ? { closeWriteWindows: (by: string) => own.closeWindow({}, by).length } : {}),
  };
}
