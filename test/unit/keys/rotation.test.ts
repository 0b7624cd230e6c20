import { afterEach, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync, writeSync } from "node:fs";
import { controlCall } from "../../../agent/core/control-client";
import type { Envelope } from "../../../agent/core/envelope";
import { fingerprint } from "../../../agent/core/keys";
import { pendingKeyPath, publicKeyPath, stagePendingKey, type RotationResult } from "../../../agent/keys/rotation";
import { Runtime } from "../../../agent/runtime";
import { TrustStore } from "../../../agent/soc/trust";
import { StreamVerifier, type ProblemLine } from "../../../agent/soc/verifier";
import { makeSite, silent, tempDir } from "../../helpers/fixture";

const DEV = "gw-rot-1";

/** Every committed event of the outbox, verified by a SOC that trusts the device's first key. */
function verifyAll(rt: Runtime, socDir: string) {
  rt.recorder.flush();
  const events = rt.outbox.readAfter(0, 100_000).map((r) => JSON.parse(r.body) as Envelope);
  const v = new StreamVerifier(new Database(":memory:"), new TrustStore(socDir, 0, false), { gapTimeoutMs: 0, dedupeWindow: 100_000 });
  const lines = v.ingest(DEV, events, 0);
  return { events, problems: lines.filter((l): l is ProblemLine => "problem" in l), verified: lines.filter((l) => !("problem" in l)).length };
}

const note = (rt: Runtime, n: number) => {
  for (let i = 0; i < n; i++) rt.recorder.record({ class: "telemetry", severity: 1, ocsf: { class_uid: 5001, activity_id: 2, message: `t${i}` } });
  rt.recorder.flush();
};

describe("gatewarden keys rotate (the daemon's side)", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  function site() {
    const t = tempDir("gw-rot-");
    cleanups.push(t.cleanup);
    const s = makeSite(t.dir, { device: DEV, settings: { "heartbeat.interval_ms": "3600000" } });
    const keyPath = s.load().config.device.key;
    const start = async () => {
      const rt = new Runtime(s.load(), silent);
      cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
      await rt.start();
      return rt;
    };
    return { ...s, keyPath, start };
  }

  it("over the control socket: the old key signs the announcement, the new one (0600) everything after", async () => {
    const s = site();
    const oldFp = fingerprint(createPublicKey(createPrivateKey(readFileSync(s.keyPath))));
    const rt = await s.start();
    note(rt, 5);
    const r = (await controlCall(rt.loaded.config.control.socket, "keys.rotate", { by: "ops@test" })) as RotationResult;
    note(rt, 5);
    const newKey = createPrivateKey(readFileSync(s.keyPath));
    expect(r).toMatchObject({ device: DEV, old_fingerprint: oldFp, new_fingerprint: fingerprint(createPublicKey(newKey)), from_seq: r.seq + 1 });
    expect(statSync(s.keyPath).mode & 0o777).toBe(0o600);
    expect(existsSync(pendingKeyPath(s.keyPath))).toBe(false);
    expect(fingerprint(createPublicKey(readFileSync(publicKeyPath(s.keyPath), "utf8")))).toBe(r.new_fingerprint);
    const v = verifyAll(rt, s.socDir);
    expect(v.problems.map((p) => [p.problem, p.action, p.new_fingerprint])).toEqual([["trust_changed", "rotation", r.new_fingerprint]]);
    expect(v.verified).toBe(v.events.length);
    expect(v.events.filter((e) => e.seq > r.seq).length).toBeGreaterThanOrEqual(5);
  });

  it("a crash after the new key was staged, before its announcement: the next start announces it, then signs with it", async () => {
    const s = site();
    const staged = stagePendingKey(s.keyPath);
    const rt = await s.start();
    note(rt, 3);
    const v = verifyAll(rt, s.socDir);
    const rot = v.problems.find((p) => p.problem === "trust_changed");
    // Announced right after the boot event, by the old key.
    expect(rot).toMatchObject({ first: 1, action: "rotation", new_fingerprint: fingerprint(createPublicKey(staged)) });
    expect(v.problems.length).toBe(1);
    expect(v.verified).toBe(v.events.length);
    expect(readFileSync(s.keyPath, "utf8")).toBe(staged.export({ format: "pem", type: "pkcs8" }));
    expect(existsSync(pendingKeyPath(s.keyPath))).toBe(false);
  });

  it("a crash after the announcement, before the new key replaced the old: the next start promotes it without a second announcement", async () => {
    const s = site();
    const oldPem = readFileSync(s.keyPath);
    const rt = await s.start();
    note(rt, 3);
    const r = await Promise.resolve(rt.rotateKey("ops@test"));
    note(rt, 3);
    await rt.stop("test", 0);
    // The files as the crash left them: the announced key still pending, the old one in place.
    renameSync(s.keyPath, pendingKeyPath(s.keyPath));
    writeFileSync(s.keyPath, oldPem, { mode: 0o600 });
    const rt2 = await s.start();
    note(rt2, 3);
    expect(fingerprint(createPublicKey(createPrivateKey(readFileSync(s.keyPath))))).toBe(r.new_fingerprint);
    expect(existsSync(pendingKeyPath(s.keyPath))).toBe(false);
    const v = verifyAll(rt2, s.socDir);
    expect(v.problems.map((p) => [p.problem, p.action])).toEqual([["trust_changed", "rotation"]]);
    expect(v.verified).toBe(v.events.length);
    expect(new Set(v.events.map((e) => e.boot)).size).toBe(2);
  });

  it("a crash after the announcement and an outbox salvaged at the next start: the signing_key comes over from the salvaged announcement, so the pending key is promoted, not announced again by the old key", async () => {
    const s = site();
    const oldPem = readFileSync(s.keyPath);
    const rt = await s.start();
    note(rt, 1500); // pages of earlier events, ahead of the announcement
    const r = rt.rotateKey("ops@test");
    await rt.stop("test", 0);
    renameSync(s.keyPath, pendingKeyPath(s.keyPath));
    writeFileSync(s.keyPath, oldPem, { mode: 0o600 });
    // A damaged page among the earlier events: the next start moves the file aside and salvages it.
    const path = s.load().config.buffer.path;
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.alloc(2000, 0xa5), 0, 2000, Math.floor(statSync(path).size / 2 / 4096) * 4096 + 100);
    closeSync(fd);
    const rt2 = await s.start();
    note(rt2, 3);
    const events = rt2.outbox.readAfter(0, 100_000).map((row) => JSON.parse(row.body) as Envelope);
    const unm = (e: Envelope) => e.ocsf.unmapped as { error_type?: string; key_rotation?: unknown } | undefined;
    expect(events.filter((e) => e.boot > r.boot).map((e) => unm(e)?.error_type)).toContain("outbox_damaged");
    expect(events.filter((e) => unm(e)?.key_rotation !== undefined).map((e) => [e.boot, e.seq])).toEqual([[r.boot, r.seq]]);
    expect(fingerprint(createPublicKey(createPrivateKey(readFileSync(s.keyPath))))).toBe(r.new_fingerprint);
    expect(existsSync(pendingKeyPath(s.keyPath))).toBe(false);
    // A SOC that knew only the old key follows the one rotation and verifies everything after it.
    const v = verifyAll(rt2, s.socDir);
    expect(v.problems.filter((p) => p.problem !== "loss_record").map((p) => [p.problem, p.action, p.new_fingerprint])).toEqual([["trust_changed", "rotation", r.new_fingerprint]]);
    expect(v.verified).toBe(v.events.length);
    expect(v.events.filter((e) => e.boot > r.boot).length).toBeGreaterThan(3);
  });

  it("an outbox running in memory refuses the rotation (OUTBOX_FAILING, naming the outbox) and changes nothing", async () => {
    const s = site();
    const before = readFileSync(s.keyPath, "utf8");
    // A directory where the outbox file should be: the daemon starts with an outbox in memory.
    const path = s.load().config.buffer.path;
    mkdirSync(path, { recursive: true });
    const rt = await s.start();
    expect(rt.outbox.path).toBe(":memory:");
    note(rt, 3);
    let err: unknown;
    try {
      await controlCall(rt.loaded.config.control.socket, "keys.rotate", { by: "ops@test" });
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: "OUTBOX_FAILING" });
    expect((err as Error).message).toBe(`the outbox ${path} could not be opened (it runs in memory): a key rotation must survive a restart; fix the storage first`);
    expect(readFileSync(s.keyPath, "utf8")).toBe(before);
    expect(existsSync(pendingKeyPath(s.keyPath))).toBe(false);
    // Nothing announced: every event still verifies under the one key, with no key change.
    const v = verifyAll(rt, s.socDir);
    expect(v.problems).toEqual([]);
    expect(v.verified).toBe(v.events.length);
    expect(v.events.length).toBeGreaterThan(3);
  });

  it("an outbox that cannot commit refuses the rotation and changes nothing", async () => {
    const s = site();
    const before = readFileSync(s.keyPath, "utf8");
    const rt = await s.start();
    rt.outbox.db.close(); // every commit fails from here on
    let err: unknown;
    try {
      rt.rotateKey("ops@test");
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).toBe("OUTBOX_FAILING");
    expect(readFileSync(s.keyPath, "utf8")).toBe(before);
    expect(existsSync(pendingKeyPath(s.keyPath))).toBe(false);
  });
});
