import { afterEach, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { SocReceiver } from "../../agent/soc/receive";
import { TrustStore } from "../../agent/soc/trust";
import type { OutLine, ProblemLine } from "../../agent/soc/verifier";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";

// Key replacements and removals reach the SOC as trust_changed lines read from the trust change
// log. A log that cannot be read used to be only logged by the receiver: the SOC heard of no
// key change again, and did not know it.
describe("a trust change log the SOC receiver cannot read", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("is a trust_log_unreadable line once per episode, and changes are reported again once it reads", async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const broker = new EmbeddedBroker();
    await broker.start();
    cleanups.push(() => broker.stop());
    const site = makeSite(t.dir, { settings: { "upstream.url": broker.url } });
    const lines: OutLine[] = [];
    const rx = new SocReceiver({ broker: broker.url, dir: site.socDir, out: join(t.dir, "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-1", protocolVersion: 4, gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
    await rx.start();
    cleanups.push(() => rx.stop());
    const of = (kind: string) => lines.filter((l): l is ProblemLine => "problem" in l && l.problem === kind);
    const log = join(site.socDir, "trusted", "changes.jsonl");
    const sweeps = async (n: number) => {
      const c = rx.counters.commits;
      await until(() => rx.counters.commits >= c + n, 20_000, `${n} sweeps`);
    };

    writeFileSync(log, "{\"at\":1}\nnot a change\n");
    await until(() => of("trust_log_unreadable").length > 0, 20_000, "the trust_log_unreadable line");
    expect(of("trust_log_unreadable")[0]!.detail).toMatch(/^the trust change log cannot be read \(TRUST_INVALID: .*changes\.jsonl line 2 is not JSON\)/);
    await sweeps(3);
    expect(of("trust_log_unreadable")).toHaveLength(1);

    // Repaired: the next removal is reported.
    writeFileSync(log, "");
    TrustStore.remove(site.socDir, "gw-test-1", 5);
    await until(() => of("trust_changed").length > 0, 20_000, "the trust_changed line");
    expect(of("trust_changed")[0]).toMatchObject({ device: "gw-test-1", action: "remove" });

    // Unreadable again: a new episode.
    writeFileSync(log, "not a change\n");
    await until(() => of("trust_log_unreadable").length > 1, 20_000, "the second trust_log_unreadable line");
    expect(lines.filter((l) => "problem" in l && !["trust_log_unreadable", "trust_changed"].includes(l.problem))).toEqual([]);
  });
});
