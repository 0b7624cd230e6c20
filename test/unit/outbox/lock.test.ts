import { afterAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { hostname } from "node:os";
import { join } from "node:path";
import { OutboxLock } from "../../../agent/outbox/lock";
import { openOffline } from "../../../agent/outbox/offline";
import { Outbox } from "../../../agent/outbox/store";
import { tempDir } from "../../helpers/fixture";

const MB = 1024 ** 2;

/** The outbox's lock names its holder; a second opener is told whom, without waiting. */
describe("outbox lock", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  let n = 0;
  const path = () => join(t.dir, `o${n++}`, "outbox.db");

  it("a command holding the outbox is named to the next opener, and a row it left once it ended is not read", () => {
    const p = path();
    const held = openOffline(p, 64 * MB, "gatewarden outbox check");
    try {
      expect(OutboxLock.holder(p)).toMatchObject({ what: "gatewarden outbox check", pid: process.pid, host: hostname() });
      expect(() => openOffline(p, 64 * MB, "gatewarden outbox check")).toThrow(
        expect.objectContaining({ code: "OUTBOX_LOCKED", message: expect.stringMatching(new RegExp(`^the outbox ${p} is held by \`gatewarden outbox check\` \\(pid ${process.pid} on .*; run this again once it has ended$`)) }),
      );
      // The daemon's own lock is refused alike (runtime.ts decides whether to wait).
      expect(() => new OutboxLock(p)).toThrow(expect.objectContaining({ code: "OUTBOX_LOCKED", holder: expect.objectContaining({ what: "gatewarden outbox check" }) }));
    } finally {
      held.close();
    }
    expect(OutboxLock.holder(p)).toBeUndefined();
    const again = openOffline(p, 64 * MB, "gatewarden outbox check");
    again.close();
  });

  it("the daemon holding it: the opener is told to ask the daemon instead; a lock file of an older version names the daemon", () => {
    const p = path();
    const old = new Outbox(p, 64 * MB);
    old.close();
    // An older daemon's lock: the owner row without `what`.
    const db = new Database(`${p}.lock`);
    db.pragma("locking_mode = EXCLUSIVE");
    db.exec("CREATE TABLE owner (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, host TEXT NOT NULL, since INTEGER NOT NULL)");
    db.prepare("INSERT INTO owner VALUES (1, 4242, 'gw-old', 0)").run();
    try {
      expect(OutboxLock.holder(p)).toEqual({ what: "daemon", pid: 4242, host: "gw-old", since: 0 });
      expect(() => openOffline(p, 64 * MB, "gatewarden outbox check")).toThrow(
        expect.objectContaining({ code: "OUTBOX_LOCKED", message: expect.stringContaining(`the outbox ${p} is held by the Gatewarden daemon (pid 4242 on gw-old, since 1970-01-01T00:00:00.000Z); ask the running daemon instead (\`gatewarden status\``) }),
      );
    } finally {
      db.close();
    }
  });

  it("a process holding the outbox file without the lock is refused as one that does not name itself", () => {
    const p = path();
    const other = new Outbox(p, 64 * MB);
    try {
      expect(() => openOffline(p, 64 * MB, "gatewarden outbox check")).toThrow(expect.objectContaining({ code: "OUTBOX_LOCKED", message: expect.stringContaining(`held by another process, which does not name itself in ${p}.lock`) }));
      // The failed opener let go of the lock it took.
      expect(OutboxLock.holder(p)).toBeUndefined();
    } finally {
      other.close();
    }
  });
});
