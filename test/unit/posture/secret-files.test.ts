import { describe, expect, it } from "vitest";
import { chmodSync, rmSync } from "node:fs";
import type { EventDraft } from "../../../agent/core/events";
import { PostureProbe } from "../../../agent/heartbeat";
import { DevicePosture } from "../../../agent/posture";
import { makeSite, tempDir } from "../../helpers/fixture";

// The daemon refuses to start with a private key readable by others, but a key widened (or
// removed) while it ran went unseen until the next start failed.
describe("secret files in the posture", () => {
  it("a key widened or removed while the daemon runs is a finding, once per file and mode; an owner-only one is not", () => {
    const t = tempDir();
    try {
      const site = makeSite(t.dir);
      const c = site.load().config;
      const events: EventDraft[] = [];
      const posture = new DevicePosture({ config: c, probe: new PostureProbe(c.buffer.path), outbox: () => ({ file_bytes: 0, budget_bytes: 1 }), integrity: () => "not_configured", sink: { record: (d) => events.push(d) } });
      expect(posture.secretFiles()).toEqual([{ key: "device.key", path: c.device.key, mode: "0600", owner_only: true }]);
      expect(events).toEqual([]);

      chmodSync(c.device.key, 0o644);
      expect(posture.secretFiles()).toEqual([{ key: "device.key", path: c.device.key, mode: "0644", owner_only: false }]);
      posture.secretFiles();
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ class: "finding", severity: 4, ocsf: { class_uid: 2004, unmapped: { posture: { secret_file: { key: "device.key", path: c.device.key, mode: "0644" } } } } });
      expect(events[0]!.ocsf.message).toBe(`Secret file readable by others: ${c.device.key} (device.key) has mode 0644 while the daemon runs; it must be readable by its owner only (chmod 600 ${c.device.key}), and the next start refuses it`);

      rmSync(c.device.key);
      expect(posture.secretFiles()).toEqual([{ key: "device.key", path: c.device.key, mode: null, owner_only: null, error: "ENOENT" }]);
      expect(events).toHaveLength(2);
      expect(events[1]!.ocsf.message).toMatch(/^Secret file gone: .*device\.key \(device\.key\) cannot be read while the daemon runs \(ENOENT\)/);
    } finally {
      t.cleanup();
    }
  });
});
