import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { findPeer } from "../../helpers/peers";

export const PYTHON = findPeer(["/usr/bin/python3"]);
export const SOCAT = findPeer(["/usr/local/bin/socat", "/usr/bin/socat"]);
export const PY_DIR = join(__dirname, "../../fixtures/modbus-py");

/** Whether /usr/bin/python3 can import pymodbus (and, for serial, pyserial). */
export function pythonHas(...mods: string[]): boolean {
  if (!PYTHON) return false;
  const r = spawnSync(PYTHON, ["-c", mods.map((m) => `import ${m}`).join(";")], { stdio: "ignore" });
  if (r.status !== 0 && process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error(`${PYTHON} cannot import ${mods.join(", ")} (GATEWARDEN_REQUIRE_PEERS=1): install python3-pymodbus, python3-serial and python3-serial-asyncio (see .ci/run)`);
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

export function spawnPy(script: string, args: string[]): ChildProcess {
  return spawn(PYTHON!, [join(PY_DIR, script), ...args], { stdio: ["ignore", "pipe", "pipe"] });
}

export function runPy(script: string, args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawnPy(script, args);
    let stdout = "";
    let stderr = "";
    p.stdout!.on("data", (d) => (stdout += d));
    p.stderr!.on("data", (d) => (stderr += d));
    const t = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      p.kill("SIGKILL");
    }, timeoutMs);
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a Python peer that prints one JSON object per line; fails with its stderr unless it exits 0 having printed some. */
export async function runPyJson<T>(script: string, args: string[]): Promise<T[]> {
  const r = await runPy(script, args);
  const lines = r.stdout.split("\n").filter((l) => l.trim() !== "");
  if (r.code !== 0 || !lines.length) throw new Error(`${script} exited with ${r.code} after ${lines.length} line(s); stderr: ${r.stderr.slice(-2000)}`);
  return lines.map((l) => JSON.parse(l) as T);
}

/**
 * Starts the pymodbus device (server.py) and resolves once it says it serves, with the port it
 * bound (ask for port 0) or the serial device it opened. Reads whole lines of its output.
 */
export function startPyServer(args: string[], timeoutMs = 60_000): Promise<{ proc: ChildProcess; listening: number | string }> {
  const proc = spawnPy("server.py", args);
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(t);
      proc.kill("SIGKILL");
      reject(new Error(`server.py ${args.join(" ")} ${why}; stderr: ${stderr.slice(-2000)}`));
    };
    const t = setTimeout(() => fail(`did not serve within ${timeoutMs} ms`), timeoutMs);
    createInterface({ input: proc.stdout! }).on("line", (l) => {
      const m = JSON.parse(l) as { listening?: number | string };
      if (m.listening === undefined) return;
      clearTimeout(t);
      resolve({ proc, listening: m.listening });
    });
    proc.once("exit", (code) => fail(`exited with ${code} before serving`));
  });
}
