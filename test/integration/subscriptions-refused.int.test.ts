import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Runtime } from "../../agent/runtime";
import { silent, until } from "../helpers/fixture";
import { aedesSite, startReceiver, type Cleanups } from "../helpers/soc-rig";

// The gateway subscribes to two topics: its SOC commands (isolate the proxy, push a policy) and
// the SOC's end-to-end acknowledgements. A broker whose ACL does not let it read one answers
// SUBSCRIBE with a failure code in SUBACK (aedes here, with an authorizeSubscribe hook): the
// gateway only logged it. The SOC learned of the first when a command it sent during an
// incident went unanswered, of the second when the outbox filled with delivered events.
describe("a gateway whose subscriptions the broker refuses", () => {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  /**
   * aedes refusing the subscriptions `refuse` names, a SOC receiver, and the daemon (with SOC
   * commands configured when `commands`); the system events the SOC got, by `error_type`.
   */
  async function start(refuse: (topic: string) => boolean, commands: boolean) {
    const { site, broker } = await aedesSite(cleanups, { "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "300" }, { authorizeSubscribe: (topic) => !refuse(topic) });
    if (commands) {
      const keys = generateKeyPairSync("ed25519");
      const pubFile = join(site.socDir, "command.pub");
      writeFileSync(pubFile, keys.publicKey.export({ type: "spki", format: "pem" }));
      appendFileSync(site.cfgFile, `\ncommands:\n  soc_command_key: ${pubFile}\n`);
    }
    const { lines } = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    return (kind: string) => lines.filter((l) => !("problem" in l) && (l.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === kind) as unknown as { class: string; severity: number; ocsf: { message: string; unmapped: Record<string, unknown> } }[];
  }

  it("tells the SOC with a signed event naming the topic and the broker's answer", async () => {
    const events = await start((topic) => topic.endsWith("/commands"), true);
    const told = () => events("commands_unsubscribed");
    await until(() => told().length > 0, 20_000, "the event saying SOC commands cannot arrive");
    const e = told()[0]!;
    // MQTT.js turns SUBACK 0x80 into an error ("Subscribe error: Unspecified error").
    expect(e).toMatchObject({ class: "system", severity: 4, ocsf: { unmapped: { topic: "gatewarden/v1/gw-test-1/commands", reason: "Subscribe error: Unspecified error" } } });
    expect(e.ocsf.message).toMatch(/^The broker refused the subscription to SOC commands on gatewarden\/v1\/gw-test-1\/commands \(Subscribe error: Unspecified error\): no command from the SOC can reach this gateway/);
    expect(told()).toHaveLength(1);
  });

  it("a refused subscription to the SOC's acknowledgements is told too: delivered events would stay in the outbox", async () => {
    const events = await start((topic) => topic.endsWith("/ack"), false);
    const told = () => events("acks_unsubscribed");
    await until(() => told().length > 0, 20_000, "the event saying the SOC's acknowledgements cannot arrive");
    expect(told()[0]).toMatchObject({ severity: 4, ocsf: { unmapped: { topic: "gatewarden/v1/gw-test-1/ack", reason: "Subscribe error: Unspecified error" } } });
    expect(told()[0]!.ocsf.message).toMatch(/^The broker refused the subscription to the SOC's acknowledgements on gatewarden\/v1\/gw-test-1\/ack \(Subscribe error: Unspecified error\): delivered events stay in the outbox/);
  });
});
