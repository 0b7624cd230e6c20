import { describe, expect, it } from "vitest";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { EventDraft } from "../../../agent/core/events";
import { checkCertificates } from "../../../agent/doctor/checks";
import { PostureProbe } from "../../../agent/heartbeat";
import { DevicePosture } from "../../../agent/posture";
import { makeSite, tempDir } from "../../helpers/fixture";
import { findOpenssl, makePki } from "../../helpers/tls";

// An expired certificate fails quietly: the gateway's client certificate cuts its link to the
// SOC, which then sees only a silent gateway. Nothing said so ahead of time.
const OPENSSL = findOpenssl();
const DAY = 86_400_000;

describe.skipIf(!OPENSSL)(`certificates in the posture and the doctor${OPENSSL ? "" : " (skipped: openssl missing)"}`, () => {
  it("says how long each certificate the config names has left, and reports one about to expire, expired or not yet valid, once each", () => {
    const t = tempDir();
    try {
      const long = makePki(t.dir, ["gw"], OPENSSL, 400);
      const shortDir = join(t.dir, "short");
      mkdirSync(shortDir);
      const short = makePki(shortDir, [], OPENSSL, 10);
      // A CA file of two CAs: judged by the one that expires first.
      const bundle = join(t.dir, "bundle.pem");
      writeFileSync(bundle, readFileSync(long.ca, "utf8") + readFileSync(short.ca, "utf8"));
      const site = makeSite(t.dir, { settings: { "upstream.ca": bundle, "upstream.cert": long.clients.gw!.cert, "upstream.key": long.clients.gw!.key } });
      const c = site.load().config;
      const events: EventDraft[] = [];
      const posture = new DevicePosture({ config: c, probe: new PostureProbe(c.buffer.path), outbox: () => ({ file_bytes: 0, budget_bytes: 1 }), integrity: () => "not_configured", sink: { record: (d) => events.push(d) } });
      const now = Date.now();
      const at = (ms: number) => posture.certificates(ms);

      const today = at(now);
      expect(today.map((s) => [s.key, s.state, s.count])).toEqual([["upstream.ca", "expires_soon", 2], ["upstream.cert", "ok", 1]]);
      expect(today[0]).toMatchObject({ path: bundle, subject: "CN=Gatewarden Test CA", days_left: expect.any(Number) });
      expect(today[0]!.days_left).toBeGreaterThanOrEqual(8);
      expect(today[0]!.days_left).toBeLessThanOrEqual(10);
      expect(today[1]!.days_left).toBeGreaterThanOrEqual(398);
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ class: "finding", severity: 3, ocsf: { class_uid: 2004, finding_info: { title: "Certificate expires soon" }, unmapped: { posture: { certificate: { key: "upstream.ca", state: "expires_soon" } } } } });
      expect(events[0]!.ocsf.message).toMatch(new RegExp(`^Certificate expires soon: ${bundle.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} \\(upstream\\.ca\\) \\(CN=Gatewarden Test CA\\) expires on \\S+, in \\d+ day\\(s\\); replace it before then`));
      at(now + DAY);
      expect(events).toHaveLength(1); // once per file, state and certificate

      // Past the short CA's end, and close to the client certificate's.
      expect(at(now + 380 * DAY).map((s) => s.state)).toEqual(["expired", "expires_soon"]);
      expect(events.slice(1).map((e) => [e.severity, (e.ocsf.finding_info as { title?: string } | undefined)?.title])).toEqual([[4, "Certificate expired"], [3, "Certificate expires soon"]]);
      expect(at(now - 2 * DAY).map((s) => s.state)).toEqual(["not_yet_valid", "not_yet_valid"]);
      expect(events.slice(3).map((e) => [e.severity, (e.ocsf.finding_info as { title?: string } | undefined)?.title])).toEqual([[3, "Certificate not yet valid"], [3, "Certificate not yet valid"]]);

      // The doctor: a warning ahead, a failure once expired.
      expect(checkCertificates(c, now).map((k) => [k.id, k.status])).toEqual([["cert:upstream.ca", "warn"], ["cert:upstream.cert", "ok"]]);
      const expired = checkCertificates(c, now + 380 * DAY);
      expect(expired.map((k) => [k.id, k.status])).toEqual([["cert:upstream.ca", "fail"], ["cert:upstream.cert", "warn"]]);
      expect(expired[0]!.fix).toBe(`issue a new certificate, replace ${bundle} and restart the daemon`);
    } finally {
      t.cleanup();
    }
  });
});
