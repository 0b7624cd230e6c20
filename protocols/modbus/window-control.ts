/**
 * Control-socket commands for write windows: `window.open`, `window.list`, `window.close`.
 * The CLI (`gatewarden window ...`) calls them on the running daemon with `controlCall`.
 */
import type { ControlRegistry } from "../../agent/core/control";
import { DaemonError } from "../../agent/core/errors";
import { osUser } from "../../agent/core/os-user";
import type { WindowStore } from "./policy/window-store";

export function registerWindowControl(server: ControlRegistry, store: () => WindowStore | undefined): void {
  const get = (): WindowStore => {
    const s = store();
    if (!s) throw new DaemonError("CONFIG_INCOMPLETE", "the Modbus proxy is not running in this daemon");
    return s;
  };
  server.handle("window.open", (args) => {
    const role = args.role;
    const minutes = Number(args.minutes);
    const reason = args.reason;
    if (typeof role !== "string" || typeof reason !== "string") throw new DaemonError("CONTROL_BAD_REQUEST", "window.open needs role, minutes and reason");
    return get().openWindow({ role, minutes, reason, by: typeof args.by === "string" ? args.by : osUser() });
  });
  server.handle("window.list", () => get().list());
  server.handle("window.close", (args) => {
    const id = typeof args.id === "string" ? args.id : undefined;
    const role = typeof args.role === "string" ? args.role : undefined;
    if (!id && !role && args.all !== true) throw new DaemonError("CONTROL_BAD_REQUEST", "window.close needs id, role or all");
    return get().closeWindow({ ...(id ? { id } : {}), ...(role ? { role } : {}) }, typeof args.by === "string" ? args.by : osUser());
  });
}

/** `modbus.status`: listeners, upstreams, open windows and roles of the running proxy. */
export function registerModbusStatus(server: ControlRegistry, status: () => unknown): void {
  server.handle("modbus.status", () => {
    const s = status();
    if (s === undefined) throw new DaemonError("CONFIG_INCOMPLETE", "the Modbus proxy is not running in this daemon");
    return s;
  });
}

/** `modbus.reload_tls`: load the Modbus/TCP Security listeners' files again now. */
export function registerTlsReload(server: ControlRegistry, reload: () => unknown): void {
  server.handle("modbus.reload_tls", () => {
    const r = reload();
    if (r === undefined) throw new DaemonError("CONFIG_INCOMPLETE", "the Modbus proxy is not running in this daemon");
    return r;
  });
}
