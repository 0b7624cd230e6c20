import { afterEach, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { TrustStore } from "../../agent/soc/trust";
import type { ProblemLine } from "../../agent/soc/verifier";
import { makeSite, until } from "../helpers/fixture";
import { aedesSite, startReceiver, type Cleanups } from "../helpers/soc-rig";

// Key replacements and removals reach the SOC as trust_changed lines read from the trust change
// log. A log that cannot be read used to be only logged by the receiver: the SOC heard of no
// key change again, and did not know it. And the receiver counted the lines it had read, so a log
// shortened by hand hid the next changes until it grew past that count.
describe("the SOC receiver's trust change log", () => {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("is a trust_log_unreadable line once per episode, and changes are reported again once it reads", async () => {
    const { site, broker } = await aedesSite(cleanups);
    const { of, lines, sweeps } = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    const log = join(site.socDir, "trusted", "changes.jsonl");

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

  it("knows reported changes by content: a log shortened by hand hides no later change and repeats none", async () => {
    const { dir, site, broker } = await aedesSite(cleanups);
    makeSite(dir, { device: "gw-test-2" });
    makeSite(dir, { device: "gw-test-3" });
    const start = () => startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    const log = join(site.socDir, "trusted", "changes.jsonl");

    const a = await start();
    TrustStore.remove(site.socDir, "gw-test-1", 5);
    await until(() => a.of("trust_changed").length > 0, 20_000, "the first trust_changed line");
    // Shortened by hand: what was reported is gone from the log, and said so once.
    writeFileSync(log, "");
    await until(() => a.of("trust_log_rewritten").length > 0, 20_000, "the trust_log_rewritten line");
    expect(a.of("trust_log_rewritten")[0]).toMatchObject({ count: 1, device: null });
    expect(a.of("trust_log_rewritten")[0]!.detail).toMatch(/^1 key change\(s\) already reported as trust_changed are no longer in the trust change log \(.*changes\.jsonl\)/);
    // The next change is the log's first line again; a receiver counting lines took it as read.
    TrustStore.remove(site.socDir, "gw-test-2", 7);
    await until(() => a.of("trust_changed").length > 1, 20_000, "the trust_changed line after the shortening");
    expect(a.of("trust_changed").map((l) => l.device)).toEqual(["gw-test-1", "gw-test-2"]);
    await a.sweeps(3);
    expect(a.of("trust_log_rewritten")).toHaveLength(1);
    await a.rx.stop();

    // A restart repeats nothing.
    const b = await start();
    await b.sweeps(3);
    expect(b.lines.filter((l) => "problem" in l).map((l) => ("problem" in l ? l.problem : ""))).toEqual(["receiver_restarted"]);
    await b.rx.stop();

    // The state of an older receiver (a count of lines read) is taken over: only what follows is new.
    const db = new Database(join(site.socDir, "receiver.db"));
    db.exec("DELETE FROM trust_seen; DELETE FROM trust_log_state; INSERT INTO trust_log (id, n) VALUES (1, 1); DROP TABLE receiver_run");
    db.close();
    TrustStore.remove(site.socDir, "gw-test-3", 9);
    const c = await start();
    await until(() => c.of("trust_changed").length > 0, 20_000, "the trust_changed line after the upgrade");
    await c.sweeps(3);
    expect(c.lines.filter((l) => "problem" in l).map((l) => [(l as ProblemLine).problem, (l as ProblemLine).device])).toEqual([["receiver_restarted", null], ["trust_changed", "gw-test-3"]]);
    // An older receiver recorded no runs: how its last one ended is not known, and said so.
    expect(c.of("receiver_restarted")[0]).toMatchObject({ previous_end: "unknown" });
  });
});
