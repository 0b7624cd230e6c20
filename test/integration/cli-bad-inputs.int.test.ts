import { afterAll, describe, expect, it } from "vitest";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { gw } from "../helpers/cli";
import { makeSite, tempDir } from "../helpers/fixture";

/** Bad inputs and environments each get a named code and a sentence naming what is wrong. */
describe("bad inputs and environments (built bundle)", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  let n = 0;
  const site = () => makeSite(join(t.dir, `s${n}`), { device: `gw-${n++}` });
  const errorOf = (r: { stdout: string }) => (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;

  it("sim water|energy --listen on a taken port or an address not this host's: LISTEN_FAILED naming the option, not an unhandled 'error' stack", async () => {
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    try {
      const at = `127.0.0.1:${(taken.address() as AddressInfo).port}`;
      for (const [kind, listen] of [["water", at], ["energy", at], ["energy", "192.0.2.1:1502"]] as const) {
        const r = gw(["sim", kind, "--listen", listen]);
        expect(r.code, `${kind} ${listen}`).toBe(1);
        expect(r.stderr, `${kind} ${listen}`).toMatch(new RegExp(`^error\\[LISTEN_FAILED\\]: the ${kind} simulator \\(--listen\\) cannot listen on ${listen.replace(/\./g, "\\.")}: `));
        expect(r.stderr).not.toMatch(/Unhandled|node:events|\n\s+at /);
      }
    } finally {
      taken.close();
    }
  });
});
