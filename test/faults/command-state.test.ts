import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { appendFileSync, readdirSync, readFileSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mqtt from "mqtt";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { Runtime } from "../../agent/runtime";
import { SocReceiver } from "../../agent/soc/receive";
import type { OutLine } from "../../agent/soc/verifier";
import { newCommand, signCommand, type Command } from "../../firmware-hooks/commands";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";
import { RawClient } from "../integration/modbus/_harness";
import { addModbusProxy, ext4Image, mountUnavailable, smallTmpfs } from "./_storage";

// A SOC command is admitted only once its counter and nonce are fsynced (so that a power cut
// cannot make it usable twice). When that write fails, the command is neither accepted nor
// refused: the daemon used to only log it, and the SOC, waiting for the audit event of the
// isolation it ordered, heard nothing. When the command was admitted but the state it changed
// cannot be saved, it is in effect until a restart and then lost: the SOC is told that too.
const why = mountUnavailable();

type CommandLine = { class: string; severity: number; ocsf: { message: string; unmapped: { error_type?: string; command: { outcome: string; failed?: string } } } };

describe("SOC command state on failing storage", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  /**
   * A gateway whose command state lives in `stateDir` (`prepare` may add to its config and fill
   * the disk before it starts), a SOC receiver, and a publisher that sends a signed command again
   * (a new counter each time, not retained) until the gateway, subscribed by then, answers.
   */
  async function gateway(dir: string, stateDir: string, prepare: (cfgFile: string) => Promise<void> | void = () => {}) {
    const broker = new EmbeddedBroker();
    await broker.start();
    cleanups.push(() => broker.stop());
    const site = makeSite(join(dir, "site"), { settings: { "upstream.url": broker.url, "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "300" } });
    const keys = generateKeyPairSync("ed25519");
    const pubFile = join(site.socDir, "command.pub");
    writeFileSync(pubFile, keys.publicKey.export({ type: "spki", format: "pem" }));
    appendFileSync(site.cfgFile, `\ncommands:\n  soc_command_key: ${pubFile}\n  state_path: ${join(stateDir, "commands.json")}\n`);
    await prepare(site.cfgFile);
    const lines: OutLine[] = [];
    const rx = new SocReceiver({ broker: broker.url, dir: site.socDir, out: join(dir, "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-1", protocolVersion: 4, gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
    await rx.start();
    cleanups.push(() => rx.stop());
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    const pub = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clean: true, reconnectPeriod: 0 });
    cleanups.push(() => pub.endAsync());
    const outcome = () => lines.filter((l) => !("problem" in l) && (l.ocsf.unmapped as { command?: unknown } | undefined)?.command !== undefined) as unknown as CommandLine[];
    const answer = async (action: Command["action"], args: Record<string, unknown>, key: KeyObject = keys.privateKey): Promise<CommandLine> => {
      let counter = 1;
      await until(async () => {
        if (outcome().length) return true;
        await pub.publishAsync("gatewarden/v1/gw-test-1/commands", signCommand(newCommand({ device: "gw-test-1", counter: counter++, action, args, validityMs: 60_000 }), key), { qos: 1 });
        return false;
      }, 20_000, "the gateway's answer to the command");
      return outcome()[0]!;
    };
    return { answer, outcome };
  }

  it.skipIf(why !== undefined)(`a command that cannot be admitted is a signed event saying it is not in effect${why ? ` [skipped: ${why}]` : ""}`, async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const fs = ext4Image(t.dir, 16);
    cleanups.push(() => fs.unmount());
    const g = await gateway(t.dir, fs.mnt);
    fs.failReadOnly();
    const o = await g.answer("proxy_mode", { mode: "isolate" });
    expect(o).toMatchObject({ class: "system", severity: 4, ocsf: { unmapped: { error_type: "command_failed", command: { outcome: "failed" } } } });
    expect(o.ocsf.message).toMatch(/^A SOC command message could not be handled \(.+\); it is not in effect$/);
    expect(g.outcome().some((l) => l.ocsf.unmapped.command.outcome === "accepted")).toBe(false);
  });

  it.skipIf(why !== undefined)(`a pushed policy admitted on a full card is in force, and the SOC is told it is not saved${why ? ` [skipped: ${why}]` : ""}`, async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const fs = smallTmpfs(t.dir, 1);
    cleanups.push(() => fs.unmount());
    let port = 0;
    const g = await gateway(t.dir, fs.mnt, async (cfgFile) => {
      port = (await addModbusProxy(cfgFile)).port;
      // Leave 64 KiB: room for the counter and nonce, not for a policy of 150 KB.
      const st = statfsSync(fs.mnt);
      const free = st.bavail * st.bsize;
      writeFileSync(join(fs.mnt, "filler"), Buffer.alloc(free - 64 * 1024));
    });
    const c = await RawClient.connect(port);
    cleanups.push(() => c.close());
    expect(await c.request(1, "03 0000 0002")).toBe("030400000000");
    // The pushed policy lets SCADA read holding registers 100-109 only; 150 KB of comments make it too large to save.
    const policy = `# ${"x".repeat(150 * 1024)}\nidentities:\n  - { match: { address: ["127.0.0.1"] }, role: scada }\nroles:\n  scada: { units: [1], functions: [read-only], read: { holding: ["100-109"] } }\n`;
    const o = await g.answer("push_policy", { policy });

    expect(o).toMatchObject({ class: "system", severity: 4, ocsf: { unmapped: { error_type: "command_failed", command: { outcome: "failed", failed: "save" } } } });
    expect(o.ocsf.message).toMatch(/^SOC command push_policy \(counter \d+\) was applied but its state could not be saved: in effect until the daemon restarts, then lost \(.*ENOSPC.*\)$/);
    expect(await c.request(1, "03 0000 0002")).toBe("8301");
    // The state file is the one saved at admission, whole (a restart reads it), and the partial
    // write does not stay behind to fill the card further.
    expect(JSON.parse(readFileSync(join(fs.mnt, "commands.json"), "utf8"))).toMatchObject({ counter: expect.any(Number), mode: "normal", policy: null });
    expect(readdirSync(fs.mnt).sort()).toEqual(["commands.json", "filler"]);
  });
});
