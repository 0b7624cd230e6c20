import { afterAll, describe, expect, it } from "vitest";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { startDetection } from "../../agent/detection/start";
import type { EventDraft } from "../../agent/core/events";
import { tempDir, until } from "../helpers/fixture";
import { ext4Image, mountUnavailable, smallTmpfs } from "./_storage";

// The detectors' state lives on the SD card beside the outbox. When it can no longer be saved,
// a restart would lose what they learned (and they would be blind while learning again): the
// SOC is told once per episode, not only the local log.
const why = mountUnavailable();
const points = { LEVEL: { source: { modbus: { device: "plc", unit: 1, table: "holding" as const, address: 0, type: "uint16" as const, word_order: "big" as const, scale: 1, offset: 0 } }, unit: "m", kind: "level" as const, range: { min: 0, max: 10 } } };
/** Saved every second (the least the config allows). */
const config = (state_path: string) => ({ state_path, save_interval_ms: 1000, groups: {}, open_after: 1, close_after: 3, budget_per_day: 0.15, correlation_window_ms: 900_000, utc_offset_min: 0, disabled: [] });

describe("detector state that cannot be saved", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it.skipIf(why !== undefined)(`is a signed system event, once, when the card turns read-only${why ? ` [skipped: ${why}]` : ""}`, async () => {
    const fs = ext4Image(t.dir, 16);
    try {
      const events: EventDraft[] = [];
      const logged: { msg: string }[] = [];
      const d = await startDetection({
        points,
        config: config(join(fs.mnt, "detectors.db")),
        sink: { record: (e) => void events.push(e) },
        log: pino({ level: "error" }, { write: (l: string) => void logged.push(JSON.parse(l) as { msg: string }) }),
      });
      const t0 = Date.now();
      for (let i = 0; i < 100; i++) d.readings.reading({ point: "LEVEL", value: 4, ts: t0 + i * 1000, source: "poll", quality: "good" });
      fs.failReadOnly();
      const failed = () => events.filter((e) => (e.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "detector_state_save");
      await until(() => failed().length > 0, 10_000, "the event about the failed save");
      const first = failed()[0]!;
      expect(first).toMatchObject({ class: "system", severity: 4 });
      expect(first.ocsf.message).toMatch(new RegExp(`^Detector state cannot be saved to ${join(fs.mnt, "detectors.db").replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} \\(.+\\); a restart now would lose what the detectors learned`));
      // Later saves fail too (each logged): still one event for the episode.
      await until(() => logged.filter((l) => l.msg === "Saving detector state failed.").length >= 3, 10_000, "two more failed saves");
      expect(failed()).toHaveLength(1);
      d.stop();
    } finally {
      fs.unmount();
    }
  });

  it.skipIf(why !== undefined)(`a full filesystem: one event when saves fail, another when they work again${why ? ` [skipped: ${why}]` : ""}`, async () => {
    const fs = smallTmpfs(join(t.dir, "full"), 1);
    try {
      const events: EventDraft[] = [];
      const d = await startDetection({
        points,
        config: config(join(fs.mnt, "detectors.db")),
        sink: { record: (e) => void events.push(e) },
        log: pino({ level: "silent" }),
      });
      const kind = (k: string) => events.filter((e) => (e.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === k);
      let t1 = Date.now();
      const feed = () => {
        for (let i = 0; i < 50; i++) d.readings.reading({ point: "LEVEL", value: 4 + (i % 3) * 0.01, ts: (t1 += 1000), source: "poll", quality: "good" });
      };
      feed();
      // Fill what is left: the state's next write (its WAL grows) finds no room.
      const filler = join(fs.mnt, "filler");
      try {
        writeFileSync(filler, Buffer.alloc(2 * 1024 * 1024));
      } catch {
        /* ENOSPC: the file holds what fitted */
      }
      await until(() => (feed(), kind("detector_state_save").length > 0), 10_000, "the event about the failed save");
      expect(kind("detector_state_save")[0]!.ocsf.message).toMatch(/^Detector state cannot be saved to .*detectors\.db \(.+\); a restart now would lose/);
      rmSync(filler);
      await until(() => (feed(), kind("detector_state_saved").length > 0), 10_000, "the event saying the state is saved again");
      expect(kind("detector_state_saved")[0]).toMatchObject({ class: "system", severity: 2 });
      expect(kind("detector_state_saved")[0]!.ocsf.message).toMatch(/^Detector state is saved again \(.*detectors\.db\), after \d+ s of failed saves$/);
      expect(kind("detector_state_save")).toHaveLength(1);
      d.stop();
    } finally {
      fs.unmount();
    }
  });
});
