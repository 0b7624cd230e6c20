import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { havePeer } from "../../helpers/peers";

export const PYTHON = havePeer("/usr/bin/python3") ? "/usr/bin/python3" : undefined;
export const SOCAT = ["/usr/local/bin/socat", "/usr/bin/socat"].find((p) => existsSync(p)) ?? (havePeer("/usr/bin/socat") ? "/usr/bin/socat" : undefined);
export const PY_DIR = join(__dirname, "../../fixtures/modbus-py");

/** Whether /usr/bin/python3 can import pymodbus (and, for serial, pyserial). */
export function pythonHas(...mods: string[]): boolean {
  if (!PYTHON) return false;
  const r = spawnSync(PYTHON, ["-c", mods.map((m) => `import ${m}`).join(";")], { stdio: "ignore" });
  if (r.status !== 0 && process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error(`${PYTHON} cannot import ${mods.join(", ")} (GATEWARDEN_REQUIRE_PEERS=1): install python3-pymodbus and python3-serial (see .ci/run)`);
  return r.status === 0;
}

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export async function waitForPort(port: number, timeoutMs = 8000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect({ port, host: "127.0.0.1" }, () => {
        s.destroy();
        r(true);
      });
      s.on("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function spawnPy(script: string, args: string[]): ChildProcess {
  return spawn(PYTHON!, [join(PY_DIR, script), ...args], { stdio: ["ignore", "pipe", "pipe"] });
}

export function runPy(script: string, args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawnPy(script, args);
    let stdout = "";
    let stderr = "";
    p.stdout!.on("data", (d) => (stdout += d));
    p.stderr!.on("data", (d) => (stderr += d));
    const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}
