import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AttributeIds, DataType, MessageSecurityMode, type ServerSession, OPCUACertificateManager, OPCUAServer, SecurityPolicy, setWarningLogger, StatusCodes, Variant, VariantArrayType } from "node-opcua";

// The stack prints warnings to stdout; the tests read what the client reports instead.
setWarningLogger(() => undefined);

export interface TestServerOptions {
  dir: string;
  port?: number;
  /** user name -> password; none: anonymous only. */
  users?: Record<string, string>;
  modes?: ("SignAndEncrypt" | "Sign" | "None")[];
  /** Security policies besides None (default Basic256Sha256), e.g. a legacy device's Basic256. */
  policies?: SecurityPolicy[];
  /** PEM files of X.509 user certificates the server accepts as user tokens. */
  userCertificates?: string[];
  /** Also a writable `ns=1;s=Pump.Speed` (Double) and methods `ns=1;s=Pump.Start` / `ns=1;s=Pump.Reset` on a `Pump` object. */
  plant?: boolean;
  /**
   * A server without subscriptions, as many embedded ones are: `unsupported` answers
   * CreateSubscription with BadServiceUnsupported (the service is removed from this server),
   * `none` allows no subscription at all (maxSubscriptions 0: BadTooManySubscriptions).
   */
  subscriptions?: "unsupported" | "none";
}

/**
 * A real node-opcua server for the client tests: SignAndEncrypt with Basic256Sha256 (and the
 * given modes), user names and passwords, and a `Plant` folder whose variables the test sets:
 * `ns=1;s=Tank.Level` (Double), `ns=1;s=Pump.Running` (Boolean), `ns=1;s=Meter.Total` (UInt64),
 * `ns=1;s=Tag.Name` (String). The server trusts any client certificate: what is under test is
 * the client's side of trust.
 */
export class TestOpcuaServer {
  readonly values: Record<string, unknown> = { "Tank.Level": 2.5, "Pump.Running": true, "Meter.Total": [0, 1234], "Tag.Name": "T1", "Pump.Speed": 1000 };
  /** Value reads each variable received in Read requests (by name, e.g. `Tag.Name`). */
  readonly reads: Record<string, number> = {};
  /** Methods called, in order (with `plant`). */
  readonly calls: string[] = [];
  private server: OPCUAServer | undefined;
  port = 0;
  /** URI of the namespace the variables are in (for `nsu=` node ids). */
  namespaceUri = "";
  /** The server's own certificate, written as PEM (what an engineer pins in `server_certificate`). */
  certFile = "";

  constructor(private readonly o: TestServerOptions) {}

  get endpoint(): string {
    return `opc.tcp://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const o = this.o;
    const modes = (o.modes ?? ["SignAndEncrypt"]).map((m) => MessageSecurityMode[m]);
    const server = new OPCUAServer({
      port: this.port || o.port || 0,
      hostname: "127.0.0.1",
      serverCertificateManager: new OPCUACertificateManager({ rootFolder: join(o.dir, "server-pki"), automaticallyAcceptUnknownCertificate: true, disableFileWatchers: true }),
      securityModes: modes,
      securityPolicies: [...(modes.includes(MessageSecurityMode.None) ? [SecurityPolicy.None] : []), ...(o.policies ?? [SecurityPolicy.Basic256Sha256])],
      allowAnonymous: !o.users && !o.userCertificates,
      userManager: o.users ? { isValidUser: (u: string, p: string) => o.users![u] === p } : undefined,
      userCertificateManager: o.userCertificates ? new OPCUACertificateManager({ rootFolder: join(o.dir, "user-pki"), automaticallyAcceptUnknownCertificate: false, disableFileWatchers: true }) : undefined,
    });
    await server.initialize();
    server.on("request", (request: { schema: { name: string }; nodesToRead?: { nodeId: { value: unknown }; attributeId: number }[] }) => {
      if (request.schema.name !== "ReadRequest") return;
      for (const n of request.nodesToRead ?? []) if (n.attributeId === AttributeIds.Value) this.reads[String(n.nodeId.value)] = (this.reads[String(n.nodeId.value)] ?? 0) + 1;
    });
    if (o.subscriptions === "unsupported") Object.defineProperty(server, "_on_CreateSubscriptionRequest", { value: undefined });
    if (o.subscriptions === "none") server.engine.serverCapabilities.maxSubscriptions = 0;
    for (const f of o.userCertificates ?? []) await server.userCertificateManager.trustCertificate(new X509Certificate(readFileSync(f)).raw);
    const space = server.engine.addressSpace!;
    const ns = space.getOwnNamespace();
    this.namespaceUri = ns.namespaceUri;
    const plant = ns.addFolder(space.rootFolder.objects, { browseName: "Plant" });
    const types: Record<string, [DataType, string]> = { "Tank.Level": [DataType.Double, "Double"], "Pump.Running": [DataType.Boolean, "Boolean"], "Meter.Total": [DataType.UInt64, "UInt64"], "Tag.Name": [DataType.String, "String"] };
    for (const [name, [dt, dtName]] of Object.entries(types)) {
      ns.addVariable({ organizedBy: plant, browseName: name, nodeId: `s=${name}`, dataType: dtName, minimumSamplingInterval: 10, value: { get: () => new Variant({ dataType: dt, arrayType: VariantArrayType.Scalar, value: this.values[name] }) } });
    }
    if (o.plant) {
      const pump = ns.addObject({ organizedBy: plant, browseName: "Pump", nodeId: "s=Pump" });
      ns.addVariable({
        componentOf: pump,
        browseName: "Speed",
        nodeId: "s=Pump.Speed",
        dataType: "Double",
        minimumSamplingInterval: 10,
        accessLevel: "CurrentRead | CurrentWrite",
        userAccessLevel: "CurrentRead | CurrentWrite",
        value: {
          get: () => new Variant({ dataType: DataType.Double, value: this.values["Pump.Speed"] }),
          set: (v: Variant) => {
            this.values["Pump.Speed"] = v.value;
            return StatusCodes.Good;
          },
        },
      });
      for (const name of ["Start", "Reset"]) {
        const m = ns.addMethod(pump, { browseName: name, nodeId: `s=Pump.${name}`, inputArguments: [], outputArguments: [{ name: "ok", dataType: DataType.Boolean }] });
        m.bindMethod(async (_inputs: Variant[], _context: unknown) => {
          this.calls.push(name);
          return { statusCode: StatusCodes.Good, outputArguments: [new Variant({ dataType: DataType.Boolean, value: true })] };
        });
      }
    }
    await server.start();
    this.server = server;
    this.port = server.endpoints[0]!.port;
    const der = server.getCertificate();
    this.certFile = join(o.dir, `server-${this.port}.pem`);
    writeFileSync(this.certFile, `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END CERTIFICATE-----\n`);
  }

  /** Subscriptions open on the server now. */
  get subscriptionCount(): number {
    return this.server?.engine.currentSubscriptionCount ?? 0;
  }

  /** Deletes every subscription on the server while the sessions stay open (as a server that ran out of resources does). */
  endSubscriptions(): number {
    const sessions = Object.values((this.server?.engine as unknown as { _sessions: Record<string, ServerSession> } | undefined)?._sessions ?? {});
    let n = 0;
    for (const s of sessions) for (const sub of [...s.publishEngine.subscriptions]) if (s.deleteSubscription(sub.id).isGood()) n++;
    return n;
  }

  async stop(): Promise<void> {
    await this.server?.shutdown(0);
    this.server = undefined;
  }
}

/**
 * A daemon config's `opcua:` section and point L_T3 (Tank.Level, metres, polled every 50 ms) for
 * `server` as "station", user gatewarden with its password in keys/plc.pass; `opcuaLines` adds
 * keys to the `opcua:` section (indented by two spaces).
 */
export function stationYaml(server: TestOpcuaServer, opcuaLines: string[] = []): string {
  return `
opcua:
${opcuaLines.map((l) => `  ${l}\n`).join("")}  servers:
    - name: station
      endpoint: "${server.endpoint}"
      server_certificate: "${server.certFile}"
      user: { username: gatewarden, password_file: keys/plc.pass }
points:
  L_T3:
    source: { opcua: { server: station, node_id: "ns=1;s=Tank.Level" } }
    unit: m
    kind: level
    range: { min: 0, max: 6.5 }
    poll_interval_ms: 50
`;
}
