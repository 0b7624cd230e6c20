import { createServer, type Server, type Socket } from "node:net";
import { chmodSync, lstatSync, renameSync, rmSync, existsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { DaemonError, describeError, pathUnusable } from "../core/errors";
import { listenError } from "../core/listen-error";
import { checkSocketPath } from "../paths";
import type { ControlHandler, ControlRegistry } from "../core/control";
import { MAX_REQUEST_BYTES, type ControlRequest } from "../core/control-protocol";
import { makeDirs } from "../core/dirs";

const MAX_CLIENTS = 16;

/** What `check` found at the socket's path, and what was done: for a signed event. */
export interface ControlSocketChange {
  what: "deleted" | "replaced_by_listener" | "replaced" | "permissions";
  message: string;
  /** Where a replacing file was moved (kept as evidence). */
  kept_at?: string;
  /** The socket serves again at its path (false: re-creating it failed, `error` says why). */
  restored: boolean;
  error?: string;
}

/**
 * A bind failure at the socket's path: LISTEN_FAILED when something took the path meanwhile
 * (EADDRINUSE), else PATH_UNUSABLE naming why (permission denied, a read-only file system, ...).
 */
function socketListenError(e: NodeJS.ErrnoException, path: string): DaemonError {
  if (e.code === "EADDRINUSE") return listenError(e, "the control socket (control.socket)", path);
  return pathUnusable(path, "control.socket", e);
}

/** Owner-only Unix socket serving registered control commands. */
export class ControlServer implements ControlRegistry {
  private readonly handlers = new Map<string, ControlHandler>();
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** The socket file this server made (device and inode), to notice it deleted or replaced. */
  private made: { dev: number; ino: number } | undefined;
  private checking = false;
  private closed = false;

  constructor(readonly path: string) {}

  handle(cmd: string, handler: ControlHandler): void {
    this.handlers.set(cmd, handler);
  }

  async listen(): Promise<void> {
    const dir = dirname(this.path);
    makeDirs(dir, "control.socket directory");
    // Too long to bind, or a directory or file there (never removed): named, as validate does.
    checkSocketPath(this.path, "control.socket");
    if (existsSync(this.path)) {
      // A stale socket from a killed daemon; a live one means a second daemon.
      if (await isAlive(this.path)) throw new DaemonError("CONTROL_UNAVAILABLE", `another daemon is already listening on ${this.path}`);
      if (statSync(this.path).isSocket()) rmSync(this.path);
    }
    await this.serve();
  }

  private async serve(): Promise<void> {
    // A server whose file is gone serves nobody new; its open connections finish their requests.
    // Closed first: closing unlinks its path, which is the new socket's once that listens.
    this.server?.close();
    this.server = undefined;
    const dir = dirname(this.path);
    makeDirs(dir, "control.socket directory");
    const server = createServer((s) => this.accept(s));
    server.maxConnections = MAX_CLIENTS;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: NodeJS.ErrnoException) => reject(socketListenError(e, this.path)));
      // Created with the process umask, then narrowed; the directory is 0700 besides.
      const old = process.umask(0o177);
      try {
        server.listen(this.path, () => resolve());
      } finally {
        process.umask(old);
      }
    });
    if (this.closed) {
      // The daemon stopped while the socket was being made again.
      server.close();
      rmSync(this.path, { force: true });
      return;
    }
    chmodSync(this.path, 0o600);
    const st = statSync(this.path);
    this.made = { dev: st.dev, ino: st.ino };
    this.server = server;
  }

  /**
   * Checks that the socket file is still the one this server made, owner-only. Deleted (a
   * cleanup of the run directory), the daemon would be unreachable: `status`, maintenance windows
   * and the audit records of update hooks would fail as if it were not running. Replaced by
   * another process's socket, that process would answer them (and take audit records the SOC
   * would never see). Widened, other local users could send commands. Each is put right (a
   * replacing file is kept at `<path>.foreign-<time>`) and returned for a signed event; undefined
   * when all is as made. Never throws.
   */
  async check(now = Date.now()): Promise<ControlSocketChange | undefined> {
    if (!this.made || this.checking || this.closed) return undefined;
    this.checking = true;
    try {
      let st: ReturnType<typeof lstatSync> | undefined;
      try {
        st = lstatSync(this.path);
      } catch {
        st = undefined;
      }
      if (st && st.dev === this.made.dev && st.ino === this.made.ino) {
        if ((st.mode & 0o077) === 0) return undefined;
        const was = (st.mode & 0o777).toString(8);
        try {
          chmodSync(this.path, 0o600);
          return { what: "permissions", restored: true, message: `the control socket ${this.path} was made accessible to others (mode ${was}); it is owner-only (0600) again` };
        } catch (e) {
          return { what: "permissions", restored: false, error: describeError(e), message: `the control socket ${this.path} was made accessible to others (mode ${was}) and could not be narrowed again (${describeError(e)})` };
        }
      }
      let what: ControlSocketChange["what"] = "deleted";
      let keptAt: string | undefined;
      let found = "was deleted";
      if (st) {
        const listener = st.isSocket() && (await isAlive(this.path));
        what = listener ? "replaced_by_listener" : "replaced";
        found = listener ? "was replaced by a socket another process listens on" : `was replaced by ${st.isSymbolicLink() ? "a symbolic link" : st.isDirectory() ? "a directory" : st.isSocket() ? "another socket" : "a file"}`;
        keptAt = `${this.path}.foreign-${new Date(now).toISOString().replace(/[:.]/g, "-")}`;
      }
      try {
        if (keptAt) renameSync(this.path, keptAt);
        await this.serve();
        return { what, restored: true, ...(keptAt ? { kept_at: keptAt } : {}), message: `the control socket ${this.path} ${found}; it was created again${keptAt ? ` (what replaced it is kept at ${keptAt})` : ""}` };
      } catch (e) {
        return { what, restored: false, error: describeError(e), ...(keptAt && !existsSync(this.path) ? { kept_at: keptAt } : {}), message: `the control socket ${this.path} ${found}, and it could not be created again (${describeError(e)}): commands cannot reach the daemon` };
      }
    } finally {
      this.checking = false;
    }
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
    this.closed = true;
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
