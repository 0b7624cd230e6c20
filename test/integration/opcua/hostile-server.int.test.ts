import { afterEach, describe, expect, it } from "vitest";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { EventDraft } from "../../../agent/core/events";
import { opcuaConfigSchema } from "../../../protocols/opcua/config";
import { OpcuaService } from "../../../protocols/opcua/service";
import { silent, tempDir, until } from "../../helpers/fixture";

/**
 * A server that answers the client's Hello, then sends message chunks that never end: the
 * input that took down node-opcua (CVE-2022-21208), open62541 and asyncua. The client must not
 * buffer them (memory stays flat while hundreds of MiB stream in; the stack discards chunks it
 * cannot place, and `max_chunk_count`/`max_message_bytes` bound any message it can), and the
 * connect deadline must drop the connection: the stack alone keeps reading such a socket.
 */
function endlessChunks(chunkBytes: number): Promise<{ server: Server; port: number; sent: () => number; closedAfter: () => number | undefined }> {
  let sent = 0;
  let closedAfter: number | undefined;
  const server = createServer((s: Socket) => {
    let started = false;
    s.on("error", () => undefined);
    s.on("close", () => (closedAfter ??= sent));
    s.on("data", (d) => {
      if (d.subarray(0, 4).toString("latin1") === "HELF") {
        const ack = Buffer.alloc(28);
        ack.write("ACKF", 0, "latin1");
        ack.writeUInt32LE(28, 4);
        ack.writeUInt32LE(0, 8); // protocol version
        ack.writeUInt32LE(65_536, 12); // receive buffer
        ack.writeUInt32LE(65_536, 16); // send buffer
        ack.writeUInt32LE(0, 20); // max message size: no limit from this side
        ack.writeUInt32LE(0, 24); // max chunk count: no limit from this side
        s.write(ack);
        return;
      }
      if (started) return;
      started = true;
      // Intermediate ("C") chunks of one message, forever.
      const chunk = Buffer.alloc(chunkBytes);
      chunk.write("MSGC", 0, "latin1");
      chunk.writeUInt32LE(chunkBytes, 4);
      chunk.writeUInt32LE(1, 8); // secure channel id
      chunk.writeUInt32LE(0, 12);
      chunk.writeUInt32LE(1, 16); // sequence number
      chunk.writeUInt32LE(1, 20); // request id
      const pump = () => {
        while (!s.destroyed && sent < 512 * 1024 ** 2 && s.write(chunk)) sent += chunkBytes;
        if (!s.destroyed && sent < 512 * 1024 ** 2) s.once("drain", pump);
      };
      pump();
    });
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r({ server, port: (server.address() as { port: number }).port, sent: () => sent, closedAfter: () => closedAfter })));
}

describe("OPC UA client against a hostile server", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("does not buffer message chunks that never end, drops the connection at its deadline and records the server as down", async () => {
    const t = tempDir("gw-opcua-hostile-");
    cleanups.push(t.cleanup);
    const evil = await endlessChunks(8192);
    cleanups.push(() => new Promise<void>((r) => evil.server.close(() => r())));
    const events: EventDraft[] = [];
    const config = opcuaConfigSchema.parse({ pki_dir: join(t.dir, "pki"), max_chunk_count: 64, max_message_bytes: 1024 ** 2, servers: [{ name: "evil", endpoint: `opc.tcp://127.0.0.1:${evil.port}`, connect_timeout_ms: 3000, reconnect_min_ms: 60_000, reconnect_max_ms: 60_000 }] });
    const svc = new OpcuaService({ config, deviceId: "gw-test", points: [], events: { record: (d) => events.push(d) }, log: silent });
    cleanups.push(() => svc.stop());
    await import("node-opcua-client"); // the stack's own size is not what is measured
    const mem = () => {
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const mem0 = mem();
    await svc.start();
    await until(() => evil.closedAfter() !== undefined, 10_000, "the client to drop the connection");
    // Far more than the 1 MiB bound went in, and memory did not follow it.
    expect(evil.closedAfter()!).toBeGreaterThan(16 * 1024 ** 2);
    expect(mem() - mem0).toBeLessThan(64 * 1024 ** 2);
    await until(() => events.some((e) => e.ocsf.class_uid === 4001 && e.ocsf.activity_id === 4), 5000, "a down event");
    const down = events.find((e) => e.ocsf.class_uid === 4001 && e.ocsf.activity_id === 4)!;
    expect(down.ocsf.message).toBe("OPC UA server evil is down: no session within connect_timeout_ms (3000 ms)");
    expect(svc.status().servers[0]!.state).toBe("down");
  });
});
