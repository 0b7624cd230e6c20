import { spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EmbeddedBroker } from "../../../agent/embedded-broker";
import { SocReceiver } from "../../../agent/soc/receive";
import type { OutLine } from "../../../agent/soc/verifier";
import { generateReleaseKey } from "../../../firmware-hooks/release";
import { BIN } from "../../helpers/cli";
import { makeSite, silent, tempDir, until } from "../../helpers/fixture";

export interface UpdateEventLine {
  device: string;
  seq: number;
  class: string;
  ocsf: { message: string; unmapped?: { update?: { engine: string; stage: string; outcome: string; reason?: string; version?: string } } };
}

/**
 * A gateway with an `update` section (device class cabinet-test, one fleet release key), an
 * embedded broker and a SOC receiver that verifies what arrives. `sign` runs the real
 * `gatewarden release sign` over a bundle's content directory.
 */
export async function updateSite(cleanups: (() => Promise<void> | void)[], extra = "") {
  const t = tempDir("gw-update-");
  cleanups.push(t.cleanup);
  const broker = new EmbeddedBroker();
  await broker.start();
  cleanups.push(() => broker.stop());
  const site = makeSite(t.dir, { settings: { "upstream.url": broker.url, "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "300" } });
  const fleet = join(t.dir, "fleet");
  const other = join(t.dir, "other-fleet");
  mkdirSync(fleet);
  mkdirSync(other);
  generateReleaseKey(join(fleet, "release.key"), join(fleet, "release.pub"));
  generateReleaseKey(join(other, "release.key"), join(other, "release.pub"));
  appendFileSync(site.cfgFile, `\nupdate:\n  device_class: cabinet-test\n  release_keys: [${join(fleet, "release.pub")}]\n  health: { deadline_ms: 15000 }\n${extra}`);
  const lines: OutLine[] = [];
  const rx = new SocReceiver({ broker: broker.url, dir: site.socDir, out: join(t.dir, "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-up", protocolVersion: 4, gapTimeoutMs: 600_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
  await rx.start();
  cleanups.push(() => rx.stop());

  const sign = (content: string, manifest: { version: string; counter: number; device_class?: string }, key = join(fleet, "release.key")) => {
    const mf = join(t.dir, `manifest-${manifest.version}-${manifest.counter}.json`);
    writeFileSync(mf, JSON.stringify({ format: "gatewarden-release/1", device_class: "cabinet-test", files: {}, ...manifest }));
    const r = spawnSync(process.execPath, [BIN, "release", "sign", mf, "--key", key, "--files", content], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`release sign: ${r.stderr}`);
  };
  /** Verified update events at the SOC (signature and chain checked by the receiver). */
  const updates = () => lines.filter((l): l is UpdateEventLine & OutLine => !("problem" in l) && !!(l as unknown as UpdateEventLine).ocsf.unmapped?.update) as unknown as UpdateEventLine[];
  const waitUpdate = async (pred: (u: NonNullable<NonNullable<UpdateEventLine["ocsf"]["unmapped"]>["update"]>, l: UpdateEventLine) => boolean, what: string, timeoutMs = 20_000) => {
    await until(() => updates().some((l) => pred(l.ocsf.unmapped!.update!, l)), timeoutMs, `the SOC to verify ${what}; it has: ${updates().map((l) => l.ocsf.message).join(" | ")}`);
    return updates().find((l) => pred(l.ocsf.unmapped!.update!, l))!;
  };
  const problems = () => lines.filter((l) => "problem" in l).map((l) => (l as { problem: string }).problem).filter((p) => p !== "duplicate");
  const counter = () => JSON.parse(readFileSync(join(site.gwDir, "data", "update", "counter.json"), "utf8")) as { counter: number; version: string };
  return { root: t.dir, broker, site, fleet, other, rx, lines, sign, updates, waitUpdate, problems, counter };
}
