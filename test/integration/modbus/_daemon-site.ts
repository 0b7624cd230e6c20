import { appendFileSync } from "node:fs";
import { SimDevice } from "../../../agent/demo/sim-server";
import { makeSite, tempDir } from "../../helpers/fixture";
import { freePort } from "./_peers";

/**
 * A gateway site whose daemon proxies one recording simulated device for an `engineer` role
 * (source 127.0.0.1) that reads holding 0-199 and writes 100-119 in a write window only.
 * `values` adds lines under the role (e.g. value bounds). Cleanups are pushed to `cleanups`.
 */
export async function engineerProxySite(cleanups: (() => Promise<void> | void)[], values: string[] = []): Promise<{ site: ReturnType<typeof makeSite>; device: SimDevice; port: number }> {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const device = new SimDevice({ record: true });
  const devPort = await device.listen(0);
  cleanups.push(() => device.close());
  const port = await freePort();
  const site = makeSite(t.dir);
  appendFileSync(site.cfgFile, engineerModbusYaml(port, devPort, values));
  return { site, device, port };
}

/** The `modbus:` section of that site: listener on `port`, the device on `devPort`. */
export function engineerModbusYaml(port: number, devPort: number, values: string[] = []): string {
  return `
modbus:
  listeners:
    - { name: scada, type: tcp, listen: "127.0.0.1:${port}" }
  upstreams:
    - { name: plc, type: tcp, target: "127.0.0.1:${devPort}" }
  routes:
    - { unit: 1, upstream: plc }
  policy:
    identities:
      - { match: { address: ["127.0.0.1"] }, role: engineer }
    roles:
      engineer:
        units: [1]
        functions: [read-write]
        read: { holding: ["0-199"] }
        write: { holding: ["100-119"] }
${values.map((l) => `        ${l}\n`).join("")}        write_window: required
`;
}
