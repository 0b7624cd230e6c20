import { createRequire } from "node:module";
import type { Logger } from "pino";

interface DgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, cb?: (err?: Error) => void): void;
  on(ev: "error", cb: (e: Error) => void): void;
  close(): void;
}

/**
 * The systemd notification protocol (sd_notify) for `Type=notify` with `WatchdogSec`: READY=1
 * once the daemon serves, STATUS= lines, WATCHDOG=1 every half watchdog period from the event
 * loop (a blocked loop stops feeding it and systemd restarts the service), STOPPING=1 on the
 * way out. Active only when systemd set NOTIFY_SOCKET; the unix-dgram addon (Node has no
 * datagram unix sockets) is loaded only then.
 */
export class SystemdNotifier {
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly sock: DgramSocket,
    private readonly path: string,
    private readonly log: Logger,
  ) {}

  static fromEnv(log: Logger, env: NodeJS.ProcessEnv = process.env): SystemdNotifier | undefined {
    const path = env.NOTIFY_SOCKET;
    if (!path) return undefined;
    if (path.startsWith("@")) {
      log.warn({ notify_socket: path }, "NOTIFY_SOCKET is an abstract socket, which this daemon cannot reach: use Type=simple or a path socket");
      return undefined;
    }
    try {
      const req = createRequire(import.meta.url);
      const sock = (req("unix-dgram") as { createSocket(t: "unix_dgram"): DgramSocket }).createSocket("unix_dgram");
      sock.on("error", (e) => log.warn({ err: e.message }, "systemd notification failed"));
      return new SystemdNotifier(sock, path, log);
    } catch (e) {
      log.error({ err: (e as Error).message }, "NOTIFY_SOCKET is set but the unix-dgram addon cannot be loaded: systemd will not see the daemon ready");
      return undefined;
    }
  }

  private send(text: string): void {
    const b = Buffer.from(text);
    try {
      this.sock.send(b, 0, b.length, this.path);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "systemd notification failed");
    }
  }

  /** Ready to serve; starts feeding the watchdog when systemd asked for one (WATCHDOG_USEC for this PID). */
  ready(status: string, env: NodeJS.ProcessEnv = process.env): void {
    this.send(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
    const usec = Number(env.WATCHDOG_USEC);
    const forPid = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
    if (usec > 0 && forPid) {
      const every = Math.max(100, Math.floor(usec / 2000));
      this.timer = setInterval(() => this.send("WATCHDOG=1"), every);
      this.timer.unref();
    }
  }

  status(text: string): void {
    this.send(`STATUS=${text}`);
  }

  stopping(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.send("STOPPING=1");
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.sock.close();
  }
}
