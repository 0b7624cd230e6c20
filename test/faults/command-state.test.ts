import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mqtt from "mqtt";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { Runtime } from "../../agent/runtime";
import { SocReceiver } from "../../agent/soc/receive";
import type { OutLine } from "../../agent/soc/verifier";
import { newCommand, signCommand } from "../../firmware-hooks/commands";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";
import { ext4Image, mountUnavailable } from "./_storage";

// A SOC command is admitted only once its counter and nonce are fsynced (so that a power cut
// cannot make it usable twice). When that write fails, the command is neither accepted nor
// refused: the daemon used to only log it, and the SOC, waiting for the audit event of the
// isolation it ordered, heard nothing.
const why = mountUnavailable();

describe("SOC command state on a card that turned read-only", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it.skipIf(why !== undefined)(`a command that cannot be admitted is a signed event saying it is not in effect${why ? ` [skipped: ${why}]` : ""}`, async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const fs = ext4Image(t.dir, 16);
    cleanups.push(() => fs.unmount());
    const broker = new EmbeddedBroker();
    await broker.start();
    cleanups.push(() => broker.stop());
    const site = makeSite(join(t.dir, "site"), { settings: { "upstream.url": broker.url, "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "300" } });
    const keys = generateKeyPairSync("ed25519");
    const pubFile = join(site.socDir, "command.pub");
    writeFileSync(pubFile, keys.publicKey.export({ type: "spki", format: "pem" }));
    appendFileSync(site.cfgFile, `\ncommands:\n  soc_command_key: ${pubFile}\n  state_path: ${join(fs.mnt, "commands.json")}\n`);
    const lines: OutLine[] = [];
    const rx = new SocReceiver({ broker: broker.url, dir: site.socDir, out: join(t.dir, "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-1", protocolVersion: 4, gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
    await rx.start();
    cleanups.push(() => rx.stop());
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    fs.failReadOnly();
    const pub = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clean: true, reconnectPeriod: 0 });
    cleanups.push(() => pub.endAsync());
    const outcome = () => lines.filter((l) => !("problem" in l) && (l.ocsf.unmapped as { command?: unknown } | undefined)?.command !== undefined) as unknown as { class: string; severity: number; ocsf: { message: string; unmapped: { error_type?: string; command: { outcome: string } } } }[];
    // Not retained: sent again (a new counter each time) until the gateway, subscribed by then, answers.
    let counter = 1;
    await until(async () => {
      if (outcome().length) return true;
      await pub.publishAsync("gatewarden/v1/gw-test-1/commands", signCommand(newCommand({ device: "gw-test-1", counter: counter++, action: "proxy_mode", args: { mode: "isolate" }, validityMs: 60_000 }), keys.privateKey), { qos: 1 });
      return false;
    }, 20_000, "the gateway's answer to the command");
    const o = outcome()[0]!;
    expect(o).toMatchObject({ class: "system", severity: 4, ocsf: { unmapped: { error_type: "command_failed", command: { outcome: "failed" } } } });
    expect(o.ocsf.message).toMatch(/^A SOC command message could not be handled \(.+\); it is not in effect$/);
    expect(outcome().some((l) => l.ocsf.unmapped.command.outcome === "accepted")).toBe(false);
  });
});
