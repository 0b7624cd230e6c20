import { createServer, type Server, type Socket } from "node:net";
import { chmodSync, mkdirSync, rmSync, existsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { DaemonError, describeError } from "../core/errors";
import type { ControlHandler, ControlRegistry } from "../core/control";
import { MAX_REQUEST_BYTES, type ControlRequest } from "../core/control-protocol";

const MAX_CLIENTS = 16;

/** Owner-only Unix socket serving registered control commands. */
export class ControlServer implements ControlRegistry {
  private readonly handlers = new Map<string, ControlHandler>();
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(readonly path: string) {}

  handle(cmd: string, handler: ControlHandler): void {
    this.handlers.set(cmd, handler);
  }

  async listen(): Promise<void> {
    const dir = dirname(this.path);
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (existsSync(this.path)) {
      // A stale socket from a killed daemon; a live one means a second daemon.
      if (await isAlive(this.path)) throw new DaemonError("CONTROL_UNAVAILABLE", `another daemon is already listening on ${this.path}`);
      if (statSync(this.path).isSocket()) rmSync(this.path);
    }
    const server = createServer((s) => this.accept(s));
    server.maxConnections = MAX_CLIENTS;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      // Created with the process umask, then narrowed; the directory is 0700 besides.
      const old = process.umask(0o177);
      try {
        server.listen(this.path, () => resolve());
      } finally {
        process.umask(old);
      }
    });
    chmodSync(this.path, 0o600);
    this.server = server;
  }

  private accept(sock: Socket): void {
    this.sockets.add(sock);
    const ac = new AbortController();
    sock.on("close", () => {
      this.sockets.delete(sock);
      ac.abort();
    });
    sock.on("error", () => sock.destroy());
    let buf = "";
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST_BYTES) {
        sock.end(JSON.stringify({ id: 0, ok: false, error: { code: "CONTROL_BAD_REQUEST", message: "request too long" } }) + "\n");
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        void this.dispatch(line, sock, ac.signal);
      }
    });
  }

  private async dispatch(line: string, sock: Socket, signal: AbortSignal): Promise<void> {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
      if (typeof req !== "object" || req === null || typeof req.cmd !== "string" || typeof req.id !== "number") throw new Error("not a request");
    } catch {
      write(sock, { id: 0, ok: false, error: { code: "CONTROL_BAD_REQUEST", message: "request is not a JSON object with id and cmd" } });
      return;
    }
    const h = this.handlers.get(req.cmd);
    if (!h) {
      write(sock, { id: req.id, ok: false, error: { code: "CONTROL_BAD_REQUEST", message: `unknown command ${req.cmd}` } });
      return;
    }
    try {
      const args = req.args && typeof req.args === "object" ? req.args : {};
      const result = await h(args, { push: (event) => write(sock, { id: req.id, event }), signal });
      write(sock, { id: req.id, ok: true, result: result ?? null });
    } catch (e) {
      // The client prints `error[CODE]: message`: the message must not carry the code again.
      const code = e instanceof DaemonError ? e.code : "CONTROL_BAD_REQUEST";
      write(sock, { id: req.id, ok: false, error: { code, message: e instanceof DaemonError ? e.message : describeError(e) } });
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    try {
      rmSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

function write(sock: Socket, obj: unknown): void {
  if (!sock.destroyed && sock.writable) sock.write(JSON.stringify(obj) + "\n");
}

function isAlive(path: string): Promise<boolean> {
  return import("node:net").then(
    ({ connect }) =>
      new Promise<boolean>((resolve) => {
        const s = connect(path);
        s.once("connect", () => {
          s.destroy();
          resolve(true);
        });
        s.once("error", () => resolve(false));
      }),
  );
}
