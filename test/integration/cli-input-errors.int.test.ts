import { afterAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { gw, gwAsync } from "../helpers/cli";
import { makeSite, tempDir } from "../helpers/fixture";

/** Inputs and environments that are not what a command expects: a named code, never INTERNAL. */
describe("malformed inputs and peers (built bundle)", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  let n = 0;
  const site = () => makeSite(join(t.dir, `s${n}`), { device: `gw-${n++}` });
  const errorOf = (r: { stdout: string }) => (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;

  /** A Unix socket server that answers every connection with `reply` (another service's socket). */
  async function foreignSocket(path: string, reply: string): Promise<Server> {
    const srv = createServer((c) => {
      c.on("error", () => {});
      c.once("data", () => c.write(reply));
    });
    await new Promise<void>((r) => srv.listen(path, r));
    return srv;
  }

  it("a control socket that answers something else is CONTROL_UNAVAILABLE naming the socket, for every client command", async () => {
    const s = site();
    for (const [i, reply] of ["HTTP/1.1 400 Bad Request\r\n\r\n\n", '{"id":1,"ok":false}\n', "[1,2]\n", "null\n", '{"hello":"world"}\n'].entries()) {
      const path = join(s.gwDir, `foreign${i}.sock`);
      const srv = await foreignSocket(path, reply);
      try {
        expect(gw(["config", "set", "control.socket", path, "--config", s.cfgFile]).code).toBe(0);
        const every = [["status"], ["reload"], ["events", "tail"], ["keys", "rotate"], ["posture"], ["maintenance", "list"], ["window", "list"], ["modbus", "status"], ["opcua", "status"]];
        for (const args of i === 0 ? every : [["status"]]) {
          const r = await gwAsync([...args, "--config", s.cfgFile, "--json"]);
          const what = `${args.join(" ")} <- ${JSON.stringify(reply)}`;
          expect(r.code, what).toBe(1);
          expect(r.stderr, what).not.toMatch(/SyntaxError|TypeError|INTERNAL|    at /);
          expect(errorOf(r), what).toMatchObject({ code: "CONTROL_UNAVAILABLE" });
          expect(errorOf(r).message, what).toContain(`the socket ${path} answered something that is not the daemon's control protocol`);
        }
      } finally {
        await new Promise((r) => srv.close(r));
      }
    }
  }, 120_000);
});
