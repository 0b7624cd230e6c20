/** Control-socket commands behind `gatewarden opcua pki list|show|trust|reject`. */
import type { ControlRegistry } from "../../agent/core/control";
import { DaemonError } from "../../agent/core/errors";
import type { OpcuaService } from "./service";

export function registerPkiControl(server: ControlRegistry, svc: OpcuaService): void {
  const thumb = (args: Record<string, unknown>, cmd: string): string => {
    if (typeof args.thumbprint !== "string") throw new DaemonError("CONTROL_BAD_REQUEST", `${cmd} needs a thumbprint`);
    return args.thumbprint;
  };
  const by = (args: Record<string, unknown>) => (typeof args.by === "string" ? args.by : "cli");
  server.handle("opcua.pki.list", () => svc.pki());
  server.handle("opcua.pki.show", (args) => svc.pkiShow(thumb(args, "opcua.pki.show")));
  server.handle("opcua.pki.trust", (args) => svc.pkiTrust(thumb(args, "opcua.pki.trust"), by(args)));
  server.handle("opcua.pki.renew", (args) => svc.renew(by(args)));
  server.handle("opcua.pki.reject", (args) => svc.pkiReject(thumb(args, "opcua.pki.reject"), by(args)));
}
