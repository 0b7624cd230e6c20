import { afterAll, describe, expect, it } from "vitest";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SocReceiver } from "../../../agent/soc/receive";
import { makeSite, silent, tempDir } from "../../helpers/fixture";

// The output file is cut back to its committed length at start, also when the receiver that
// wrote it crashed before it committed its first message.

describe("SOC receiver output file", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  // Each test its own SOC state: every start after a state's first writes a receiver_restarted line.
  const sites = new Map<string, string>();
  const socDir = (out: string) => sites.get(out) ?? sites.set(out, makeSite(`${out}.site`).socDir).get(out)!;
  const mk = (out: string) => new SocReceiver({ broker: "mqtt://127.0.0.1:1", dir: socDir(out), out, topic: "gatewarden/v1/+/events", gapTimeoutMs: 60_000, dedupeWindow: 1000, log: silent });

  it("cuts a half-written line left before the first commit", async () => {
    const out = join(t.dir, "first.jsonl");
    await mk(out).stop();
    appendFileSync(out, '{"device":"half-written');
    await mk(out).stop();
    // Cut back to the committed length: what follows is the second start's own line only.
    expect(readFileSync(out, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as unknown)).toEqual([expect.objectContaining({ problem: "receiver_restarted", previous_end: "stopped" })]);
  });

  it("keeps what an output file held before the receiver first used it", async () => {
    const out = join(t.dir, "existing.jsonl");
    writeFileSync(out, '{"kept":true}\n');
    await mk(out).stop();
    appendFileSync(out, '{"device":"half-written');
    await mk(out).stop();
    const [kept, ...rest] = readFileSync(out, "utf8").split("\n").filter(Boolean);
    expect(kept).toBe('{"kept":true}');
    expect(rest.map((l) => JSON.parse(l) as unknown)).toEqual([expect.objectContaining({ problem: "receiver_restarted", previous_end: "stopped" })]);
  });
});
