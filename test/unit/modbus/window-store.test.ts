import Database from "better-sqlite3";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { isDaemonError } from "../../../agent/core/errors";
import { WindowFile, WindowStore, type WriteWindow } from "../../../protocols/modbus/policy/window-store";

const dir = mkdtempSync(join(tmpdir(), "gw-windows-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function rig(o: { file?: string; roles?: string[]; maxOpen?: number; clock?: { t: number } } = {}) {
  const file = o.file ?? join(dir, `w${++n}`, "modbus.db");
  const clock = o.clock ?? { t: 1_800_000_000_000 };
  const events: string[] = [];
  const store = new WindowStore({
    roles: () => o.roles ?? ["eng", "op"],
    maxOpen: o.maxOpen ?? 4,
    now: () => clock.t,
    persist: new WindowFile(file),
    events: { opened: (w) => events.push(`opened ${w.role}`), closed: (w, how, by) => events.push(`${how} ${w.role} by ${by}`) },
  });
  return { file, clock, events, store };
}

const rows = (file: string): WriteWindow[] => {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare("SELECT * FROM write_windows").all() as WriteWindow[];
  } finally {
    db.close();
  }
};

describe("write windows across restarts", () => {
  it("a window open at shutdown is open again after a restart, with its id and original expiry", () => {
    const a = rig();
    const w = a.store.openWindow({ role: "eng", minutes: 30, reason: "pump 2 setpoint", by: "alice" });
    expect(rows(a.file)).toEqual([w]);
    a.store.dispose();
    a.clock.t += 10 * 60_000; // down for 10 minutes
    const b = rig({ file: a.file, clock: a.clock });
    expect(b.store.restore()).toEqual([w]);
    expect(b.store.list()).toEqual([w]);
    expect(b.store.isOpen("eng", b.clock.t)).toBe(true);
    expect(b.events).toEqual([]); // nothing opened or closed by the restart itself
    b.clock.t = w.expires_at;
    expect(b.store.isOpen("eng", b.clock.t)).toBe(false);
    b.store.sweep();
    expect(b.events).toEqual(["expired eng by timer"]);
    expect(rows(a.file)).toEqual([]);
    b.store.dispose();
  });

  it("a window that expired while the daemon was down closes at start with its expired event", () => {
    const a = rig();
    const w = a.store.openWindow({ role: "eng", minutes: 5, reason: "short" });
    const keep = a.store.openWindow({ role: "op", minutes: 60, reason: "long" });
    a.store.dispose();
    a.clock.t = w.expires_at; // exactly at expiry: closed
    const b = rig({ file: a.file, clock: a.clock });
    expect(b.store.restore()).toEqual([keep]);
    expect(b.events).toEqual(["expired eng by timer"]);
    expect(b.store.isOpen("eng", b.clock.t)).toBe(false);
    expect(rows(a.file)).toEqual([keep]);
    b.store.dispose();
    // A third start does not report it again.
    const c = rig({ file: a.file, clock: a.clock });
    expect(c.store.restore()).toEqual([keep]);
    expect(c.events).toEqual([]);
    c.store.dispose();
  });

  it("windows closed by hand stay closed after a restart", () => {
    const a = rig();
    const w = a.store.openWindow({ role: "eng", minutes: 30, reason: "x" });
    expect(a.store.closeWindow({ id: w.id })).toEqual([w]);
    a.store.dispose();
    const b = rig({ file: a.file, clock: a.clock });
    expect(b.store.restore()).toEqual([]);
    expect(b.store.isOpen("eng", b.clock.t)).toBe(false);
    b.store.dispose();
  });

  it("closes restored windows whose role the policy no longer has, and those past max_open", () => {
    const a = rig({ maxOpen: 4 });
    const ws = ["eng", "op", "eng", "op"].map((role, i) => {
      a.clock.t += 1000;
      return a.store.openWindow({ role, minutes: 30 + i, reason: `r${i}` });
    });
    a.store.dispose();
    const b = rig({ file: a.file, clock: a.clock, roles: ["eng"], maxOpen: 1 });
    expect(b.store.restore()).toEqual([ws[0]]); // the earliest opened is kept
    expect(b.events).toEqual(["closed op by policy", "closed eng by max_open", "closed op by policy"]);
    expect(rows(a.file)).toEqual([ws[0]]);
    b.store.dispose();
  });

  it("bounds the number of open windows", () => {
    const a = rig({ maxOpen: 2 });
    a.store.openWindow({ role: "eng", minutes: 1, reason: "a" });
    a.store.openWindow({ role: "op", minutes: 10, reason: "b" });
    let err: unknown;
    try {
      a.store.openWindow({ role: "eng", minutes: 10, reason: "c" });
    } catch (e) {
      err = e;
    }
    expect(isDaemonError(err, "USAGE")).toBe(true);
    expect(a.store.list()).toHaveLength(2);
    a.clock.t += 60_000; // the first one expires: room again
    expect(a.store.openWindow({ role: "eng", minutes: 10, reason: "c" }).role).toBe("eng");
    expect(rows(a.file)).toHaveLength(2);
    a.store.dispose();
  });

  it("does not open a window it cannot save", () => {
    const a = rig();
    const w = a.store.openWindow({ role: "eng", minutes: 10, reason: "a" });
    a.store.dispose(); // closes the state file
    let err: unknown;
    try {
      a.store.openWindow({ role: "op", minutes: 10, reason: "b" });
    } catch (e) {
      err = e;
    }
    expect(isDaemonError(err, "WINDOW_STATE")).toBe(true);
    expect(a.store.list()).toEqual([w]);
    expect(a.store.isOpen("op", a.clock.t)).toBe(false);
    expect(a.events).toEqual(["opened eng"]);
  });

  it("refuses to start on a state file it cannot open", () => {
    const plain = join(dir, "plain-file");
    writeFileSync(plain, "not a directory");
    let err: unknown;
    try {
      new WindowFile(join(plain, "modbus.db"));
    } catch (e) {
      err = e;
    }
    expect(isDaemonError(err, "WINDOW_STATE")).toBe(true);
  });

  it("closes restored windows by timer at their original expiry, also past the longest single timer", () => {
    vi.useFakeTimers({ now: 1_800_000_000_000 });
    try {
      const file = join(dir, "timer", "modbus.db");
      const events: string[] = [];
      const mk = () =>
        new WindowStore({ roles: () => ["eng"], maxOpen: 4, persist: new WindowFile(file), events: { opened: () => {}, closed: (w, how, by) => events.push(`${how} ${w.reason} by ${by}`) } });
      const a = mk();
      a.openWindow({ role: "eng", minutes: 3, reason: "three" });
      a.openWindow({ role: "eng", minutes: 1, reason: "one" });
      a.dispose();
      vi.setSystemTime(Date.now() + 30_000); // down for 30 s
      const b = mk();
      expect(b.restore()).toHaveLength(2);
      vi.advanceTimersByTime(29_000);
      expect(events).toEqual([]);
      vi.advanceTimersByTime(1_100); // 60 s after opening
      expect(events).toEqual(["expired one by timer"]);
      vi.advanceTimersByTime(119_000);
      expect(events).toEqual(["expired one by timer"]);
      vi.advanceTimersByTime(1_000); // 180 s after opening
      expect(events).toEqual(["expired one by timer", "expired three by timer"]);
      expect(b.list()).toEqual([]);
      expect(rows(file)).toEqual([]);
      b.dispose();
    } finally {
      vi.useRealTimers();
    }
  });
});
