/**
 * Golden folders: test/fixtures/modbus-proxy/<case>/{config.json, request.hex,
 * expected.jsonl | error.txt}. Each case's bytes go through a real proxy to a recording device.
 * expected.jsonl lines: {"response": hex frame the client gets}, in the order it gets them, and
 * {"upstream": "unit:pdu hex" the device gets}, in order; nothing else may reach the device. error.txt: the codec error code, and
 * the proxy closes the connection without forwarding anything.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeTcpRequest } from "../../../protocols/modbus/codec/frame";
import { isDaemonError } from "../../../agent/core/errors";
import { exchange, startRig } from "./_harness";

const root = join(__dirname, "../../fixtures/modbus-proxy");
const cases = readdirSync(root).filter((d) => existsSync(join(root, d, "request.hex")));

describe("golden proxy cases", () => {
  it("has cases", () => expect(cases.length).toBeGreaterThan(10));
  it.each(cases)("%s", async (name) => {
    const dir = join(root, name);
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    const hex = readFileSync(join(dir, "request.hex"), "utf8")
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .join("")
      .replace(/\s+/g, "");
    const bytes = Buffer.from(hex, "hex");
    // A frame timeout far beyond the exchange's: a proxy that waits for more bytes instead of
    // answering (or closing) at once fails the case, however slow the machine.
    const rig = await startRig(cfg.policy, { limits: { frame_timeout_ms: 120_000 } });
    try {
      if (existsSync(join(dir, "error.txt"))) {
        const code = readFileSync(join(dir, "error.txt"), "utf8").trim();
        let thrown: unknown;
        try {
          decodeTcpRequest(bytes);
        } catch (e) {
          thrown = e;
        }
        expect(isDaemonError(thrown, code as "MODBUS_FRAME")).toBe(true);
        const r = await exchange(rig.port, bytes, 1, 30_000, true);
        expect(r.closed).toBe(true);
        expect(r.frames).toEqual([]);
      } else {
        const expected = readFileSync(join(dir, "expected.jsonl"), "utf8")
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { response?: string; upstream?: string });
        const responses = expected.flatMap((e) => (e.response ? [e.response] : []));
        const r = await exchange(rig.port, bytes, responses.length, 30_000);
        expect(r.frames).toEqual(responses);
        // Room for a request that should not reach the device to arrive late (a negative check).
        await new Promise((res) => setTimeout(res, 20));
      }
      const upstream = existsSync(join(dir, "expected.jsonl"))
        ? readFileSync(join(dir, "expected.jsonl"), "utf8")
            .trim()
            .split("\n")
            .flatMap((l) => {
              const e = JSON.parse(l) as { upstream?: string };
              return e.upstream ? [e.upstream] : [];
            })
        : [];
      expect(rig.device.received).toEqual(upstream);
    } finally {
      await rig.close();
    }
  });
});
