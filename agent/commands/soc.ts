import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { exitOnUncaught } from "../core/crash";
import { DaemonError, pathUnusable } from "../core/errors";
import Database from "better-sqlite3";
import { existsSync, statSync } from "node:fs";
import { generateSocKeys, loadSocSecretKey, parseTrust, socPublicKeyFile } from "../keys/identity";
import { brokerOptionsAuth, topicFilterProblem } from "../mqtt-connection";
import { createLogger } from "../log";
import { SocReceiver, STATE_WHAT } from "../soc/receive";
import { sqliteFileError } from "../core/sqlite";
import { TrustStore } from "../soc/trust";
import { verifyFile } from "../soc/verify-file";
import { report } from "./_output";
import { wholeNumber } from "./_numbers";
import { makeDirs } from "../core/dirs";

export function registerSoc(program: Command): void {
  const soc = program.command("soc").description("The SOC side: sealing keys, trusted devices, the receiver and offline verification");

  const keys = soc.command("keys").description("SOC sealing and ack keys");
  keys
    .command("init")
    .description("Create the SOC's X25519 key pair in DIR (soc.key 0600, soc.pub for the gateways)")
    .requiredOption("--dir <DIR>", "SOC state directory")
    .option("--json", "print the result as JSON")
    .action(
      (opts: { dir: string; json?: boolean }) => {
        const dir = resolve(opts.dir);
        makeDirs(dir, "--dir");
        const pub = generateSocKeys(join(dir, "soc.key"), join(dir, "soc.pub"));
        report(opts.json, { secret_key: join(dir, "soc.key"), public_key: join(dir, "soc.pub"), x25519: pub.public_key }, () => `Created ${join(dir, "soc.key")} (0600) and ${join(dir, "soc.pub")}.\nCopy soc.pub to each gateway and set upstream.soc_public_key to its path.`);
      },
    );

  keys
    .command("public")
    .description("Print soc.pub for DIR's soc.key (X25519 sealing key and the Ed25519 key end-to-end acks are signed with)")
    .requiredOption("--dir <DIR>", "SOC state directory")
    .action(
      (opts: { dir: string }) => {
        process.stdout.write(JSON.stringify(socPublicKeyFile(loadSocSecretKey(join(resolve(opts.dir), "soc.key")))) + "\n");
      },
    );

  const trust = soc.command("trust").description("Trusted device keys: add, replace, list, remove (every change is logged and reported by the receiver)");
  trust
    .command("add <FILE>")
    .description("Trust a device: FILE is the output of `gatewarden keys export-public` on the gateway")
    .requiredOption("--dir <DIR>", "SOC state directory")
    .option("--replace", "replace the key of a device already trusted (refused without it)")
    .option("--from-boot <BOOT>", "with --replace: the first boot epoch the new key is valid for (default: after the last boot the receiver verified)")
    .option("--json", "print the result as JSON")
    .action(
      (file: string, opts: { dir: string; replace?: boolean; fromBoot?: string; json?: boolean }) => {
        let text: string;
        try {
          text = readFileSync(file, "utf8");
        } catch (e) {
          throw new DaemonError("TRUST_INVALID", `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? "error"})`);
        }
        if (opts.fromBoot !== undefined && !opts.replace) throw new DaemonError("USAGE", "--from-boot goes with --replace");
        const dir = resolve(opts.dir);
        const device = parseTrust(text, file).device;
        const fromBoot = opts.fromBoot !== undefined ? wholeNumber(opts.fromBoot, "--from-boot", "seconds (a boot epoch)") : nextBoot(dir, device);
        const r = TrustStore.add(dir, text, file, opts.replace ? { fromBoot } : undefined);
        report(opts.json, r, () => (r.replaced ? `Replaced the key of ${r.device}: ${r.replaced} -> ${r.fingerprint}, valid from boot ${r.from_boot}; the old key still verifies the boots before it.` : `Trusted device ${r.device} (${r.fingerprint}).`));
      },
    );
  trust
    .command("list")
    .description("List trusted devices, their current key and key history")
    .requiredOption("--dir <DIR>", "SOC state directory")
    .option("--json", "print as JSON")
    .action(
      (opts: { dir: string; json?: boolean }) => {
        const all = new TrustStore(socStateDir(resolve(opts.dir))).list();
        report(opts.json, all, () =>
          all.length
            ? all.map((d) => `${d.device}  ${d.retired ? `retired at ${d.retired.boot}:${d.retired.seq}` : d.removed_at !== undefined ? "removed" : "trusted"}  ${d.keys.at(-1)!.fingerprint}${d.keys.length > 1 ? `  (${d.keys.length} keys: ${d.keys.map((k) => `${k.fingerprint.slice(0, 19)}… ${span(k.from_boot, k.from_seq, "start")}..${span(k.until_boot, k.until_seq, "now")}`).join("; ")})` : ""}`).join("\n")
            : "No trusted devices.",
        );
      },
    );
  trust
    .command("remove <DEVICE>")
    .description("Stop trusting a device: later events from it are unknown_device; its old output still verifies")
    .requiredOption("--dir <DIR>", "SOC state directory")
    .option("--until-boot <BOOT>", "the last boot epoch its key is valid for (default: the last boot the receiver verified)")
    .option("--json", "print the result as JSON")
    .action(
      (device: string, opts: { dir: string; untilBoot?: string; json?: boolean }) => {
        const dir = socStateDir(resolve(opts.dir));
        const until = opts.untilBoot !== undefined ? wholeNumber(opts.untilBoot, "--until-boot", "seconds (a boot epoch)") : nextBoot(dir, device) - 1;
        const r = TrustStore.remove(dir, device, until);
        report(opts.json, r, () => `Removed ${r.device} (${r.fingerprint}); its key verifies boots up to ${r.until_boot}.`);
      },
    );

  soc
    .command("receive")
    .description("Subscribe to the gateways' events; write verified, de-duplicated events and problem lines as JSON lines")
    .requiredOption("--broker <URL>", "mqtt://HOST:PORT or mqtts://HOST:PORT")
    .requiredOption("--dir <DIR>", "SOC state directory (soc.key, trusted/, receiver state)")
    .requiredOption("--out <FILE>", "output JSON-lines file, or - for stdout")
    .option("--ca <FILE>", "CA for the broker's certificate")
    .option("--cert <FILE>", "client certificate (mTLS)")
    .option("--key <FILE>", "client key (0600)")
    .option("--username <NAME>", "broker user name")
    .option("--password-file <FILE>", "file holding the broker password (0600)")
    .option("--topic <FILTER>", "topic filter", "gatewarden/v1/+/events")
    .option("--share <GROUP>", "consume through the MQTT v5 shared subscription $share/GROUP/<topic>")
    .option("--trust-dir <DIR>", "directory holding trusted/ (default: --dir); give every member of a --share group the same one, so that each follows a key rotation any of them receives")
    .option("--key-wait-ms <MS>", "with --share: how long a message signed by a key not seen yet waits, unacknowledged, for the rotation another member received before it is bad_signature", "10000")
    .option("--continuity <MODE>", "online: chain, gap and lost-tail checks here (default without --share); offline: leave them to `soc verify` over all receivers' outputs (default with --share)")
    .option("--client-id <ID>", "MQTT client id; keep it stable so the broker keeps the session while the receiver is down")
    .option("--gap-timeout-ms <MS>", "how long a hole in a device's sequence may wait for late events before it is reported as a gap", "300000")
    .option("--silence-ms <MS>", "report a trusted device from which no verified event came for this long as silent (its heartbeat has stopped), once, and again when it is heard (silence_ended); 0: off (default 300000, off with --share)")
    .option("--clock-skew-ms <MS>", "report a device whose event is stamped this much after it arrived (clock_ahead) or before an event it follows (clock_back), once per device and boot; 0: off (default 300000)")
    .option("--mqtt-version <V>", "5, or 4 for MQTT 3.1.1 brokers", "5")
    .option("--dedupe-window <N>", "positions per device boot remembered for de-duplication", "100000")
    .action(
      async (opts: { broker: string; dir: string; out: string; ca?: string; cert?: string; key?: string; username?: string; passwordFile?: string; topic: string; share?: string; trustDir?: string; keyWaitMs: string; clientId?: string; gapTimeoutMs: string; silenceMs?: string; clockSkewMs?: string; dedupeWindow: string; mqttVersion: string; continuity?: string }) => {
        brokerOptionsAuth(opts);
        const topicProblem = topicFilterProblem(opts.topic);
        if (topicProblem) throw new DaemonError("USAGE", `--topic ${JSON.stringify(opts.topic)} is not an MQTT topic filter: ${topicProblem}`);
        if (opts.trustDir !== undefined) existingDir(resolve(opts.trustDir), "--trust-dir");
        const log = createLogger("info", 2);
        const r = new SocReceiver({
          broker: opts.broker,
          dir: resolve(opts.dir),
          out: opts.out === "-" ? "-" : resolve(opts.out),
          topic: opts.topic,
          share: opts.share,
          trustDir: opts.trustDir === undefined ? undefined : resolve(opts.trustDir),
          keyWaitMs: wholeNumber(opts.keyWaitMs, "--key-wait-ms", "milliseconds"),
          clientId: opts.clientId,
          ca: opts.ca,
          cert: opts.cert,
          key: opts.key,
          username: opts.username,
          passwordFile: opts.passwordFile,
          gapTimeoutMs: wholeNumber(opts.gapTimeoutMs, "--gap-timeout-ms", "milliseconds"),
          ...(opts.silenceMs === undefined ? {} : { silenceMs: wholeNumber(opts.silenceMs, "--silence-ms", "milliseconds") }),
          ...(opts.clockSkewMs === undefined ? {} : { clockSkewMs: wholeNumber(opts.clockSkewMs, "--clock-skew-ms", "milliseconds") }),
          dedupeWindow: wholeNumber(opts.dedupeWindow, "--dedupe-window", "positions"),
          protocolVersion: mqttVersion(opts.mqttVersion),
          continuity: opts.continuity === undefined ? undefined : continuityMode(opts.continuity),
          log,
        });
        if (opts.share && opts.trustDir === undefined) log.warn("With --share and no --trust-dir, a key rotation is followed only by the member that receives it; the others report the new key's events as bad_signature. Give every member the same --trust-dir.");
        // An error nothing handled: the run's end is recorded as a crash (the next start reports
        // it as receiver_restarted), then exit 70 for systemd to restart it.
        exitOnUncaught(log, "The SOC receiver crashed on an error nothing handled.", (what) => r.crashed(what));
        await r.start();
        await new Promise<void>((done) => {
          const stop = (signal: NodeJS.Signals) => void r.stop(`stopped by ${signal}`).finally(done);
          process.once("SIGTERM", stop);
          process.once("SIGINT", stop);
        });
      },
    );

  soc
    .command("verify <FILE>")
    .description("Re-verify a receiver output file offline: signatures, hashes, chain, duplicates, gaps, loss records")
    .option("--dir <DIR>", "SOC state directory holding trusted/ (default: $GATEWARDEN_SOC_DIR or .)")
    .option("--json", "print the report as JSON")
    .option("--clock-skew-ms <MS>", "as the receiver's: report clock_ahead and clock_back by each event's received_at; 0: off (default 300000)")
    .action(
      async (file: string, opts: { dir?: string; json?: boolean; clockSkewMs?: string }) => {
        const skew = opts.clockSkewMs === undefined ? undefined : wholeNumber(opts.clockSkewMs, "--clock-skew-ms", "milliseconds");
        // Read once, never written: rotations and farewells in the file are followed in memory.
        const dir = resolve(opts.dir ?? process.env.GATEWARDEN_SOC_DIR ?? ".");
        existingDir(dir, opts.dir !== undefined ? "--dir" : process.env.GATEWARDEN_SOC_DIR !== undefined ? "$GATEWARDEN_SOC_DIR" : "the current directory (no --dir)");
        const trust = new TrustStore(dir, Infinity, false);
        const r = await verifyFile(file, trust, skew);
        report(opts.json, r, () =>
          [
            ...r.key_changes.map((p) => `key change: ${p.detail}`),
            ...r.problem_lines.map((p) => JSON.stringify(p)),
            `${r.file}: ${r.events} events from ${r.devices.length} device(s), ${r.verified} verified; problems: ${Object.entries(r.problems).map(([k, v]) => `${k}=${v}`).join(", ") || "none"}`,
          ].join("\n"),
        );
        if (r.problem_lines.length) process.exitCode = 1;
      },
    );
}

/**
 * The first boot epoch after what the receiver in DIR verified of `device` (its state), or, with
 * no receiver state, the current time in seconds (a boot epoch is its start time in seconds).
 */
function nextBoot(dir: string, device: string): number {
  const db = join(dir, "receiver.db");
  if (existsSync(db)) {
    // SQLite reports a directory as an I/O error.
    if (statSync(db).isDirectory()) throw pathUnusable(db, STATE_WHAT, "it is a directory");
    let r: { last_boot: unknown } | undefined;
    try {
      const d = new Database(db, { readonly: true, fileMustExist: true });
      try {
        const has = d.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'devices'").get();
        const cols = has ? (d.prepare("PRAGMA table_info(devices)").all() as { name: string }[]).map((c) => c.name) : [];
        if (has && !(cols.includes("device") && cols.includes("last_boot"))) throw pathUnusable(db, STATE_WHAT, "it is a SQLite database but not a Gatewarden receiver's state (its table devices has no device and last_boot columns)");
        r = has ? (d.prepare("SELECT last_boot FROM devices WHERE device = ?").get(device) as { last_boot: unknown } | undefined) : undefined;
      } finally {
        d.close();
      }
    } catch (e) {
      throw sqliteFileError(db, STATE_WHAT, e);
    }
    if (r && Number.isSafeInteger(r.last_boot)) return (r.last_boot as number) + 1;
  }
  return Math.floor(Date.now() / 1000);
}

/** A key's first or last position: boot, or boot:seq for a key rotated within a boot. */
function span(boot: number | null, seq: number | undefined, open: string): string {
  return boot === null ? open : seq === undefined ? `boot ${boot}` : `${boot}:${seq}`;
}


export function mqttVersion(s: string): 4 | 5 {
  if (s === "4" || s === "5") return Number(s) as 4 | 5;
  throw new DaemonError("USAGE", `--mqtt-version must be 4 or 5, not ${s}`);
}

function continuityMode(s: string): boolean {
  if (s === "online" || s === "offline") return s === "online";
  throw new DaemonError("USAGE", `--continuity must be online or offline, not ${s}`);
}

/** A directory that must already exist (PATH_UNUSABLE naming `what` otherwise). */
function existingDir(path: string, what: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw pathUnusable(path, what, err.code === "ENOENT" ? `it does not exist (${err.code})` : err);
  }
  if (!st.isDirectory()) throw pathUnusable(path, what, "it is not a directory");
}

/**
 * A SOC state directory that commands reading the trust store are pointed at: it exists and holds
 * trusted/ or soc.key (PATH_UNUSABLE naming --dir otherwise: a mistyped path is not "no devices").
 */
function socStateDir(dir: string): string {
  existingDir(dir, "--dir");
  if (!existsSync(join(dir, "trusted")) && !existsSync(join(dir, "soc.key"))) throw pathUnusable(dir, "--dir", "it holds neither trusted/ nor soc.key, so it is not a SOC state directory (`gatewarden soc keys init --dir DIR` makes one)");
  return dir;
}
