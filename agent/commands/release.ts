import type { Command } from "commander";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { report } from "./_output";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { DaemonError } from "../core/errors";
import { writeFileAtomic } from "../core/secret-files";
import { runHook } from "../../firmware-hooks/hook";
import { generateReleaseKey, hashTree, loadReleasePrivateKey, parseManifest, RELEASE_FILE, signManifest } from "../../firmware-hooks/release";
import { applyUpdate, rollBack, standaloneStatus, verifyBundle } from "../../firmware-hooks/standalone";

interface Opts {
  config?: string;
  json?: boolean;
}

/** `<parent> init --dir DIR`: an Ed25519 key pair DIR/<base>.key (0600) and DIR/<base>.pub. */
export function addKeyInit(parent: Command, base: string, pubUse: string): void {
  parent
    .command("init")
    .description(`Create an Ed25519 key pair: DIR/${base}.key (0600, keep offline) and DIR/${base}.pub (the ${pubUse})`)
    .requiredOption("--dir <DIR>", "where to write the keys")
    .option("--json", "print as JSON")
    .action(
      (opts: { dir: string; json?: boolean }) => {
        const dir = resolve(opts.dir);
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const [priv, pub] = [join(dir, `${base}.key`), join(dir, `${base}.pub`)];
        const fp = generateReleaseKey(priv, pub);
        report(opts.json, { private_key: priv, public_key: pub, fingerprint: fp }, () => `Created ${priv} (0600) and ${pub}\nfingerprint ${fp}`);
      },
    );
}

export function registerReleaseCommands(program: Command): void {
  const release = program.command("release").description("Fleet side: release keys and signed release manifests");
  addKeyInit(release.command("keys").description("Fleet release keys"), "release", "release public key for update.release_keys");
  release
    .command("sign <MANIFEST>")
    .description(`Sign a release manifest (JSON: format, version, counter, device_class, files) into ${RELEASE_FILE}`)
    .requiredOption("--key <FILE>", "release private key (from `release keys init`)")
    .option("--files <DIR>", "fill `files` with the SHA-256 of every file under DIR (the bundle's content)")
    .option("--out <FILE>", `where to write the signed manifest (default: DIR/${RELEASE_FILE} with --files, else beside MANIFEST)`)
    .option("--json", "print as JSON")
    .action(
      (file: string, opts: { key: string; files?: string; out?: string; json?: boolean }) => {
        let raw: Record<string, unknown>;
        try {
          raw = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
        } catch (e) {
          throw new DaemonError("RELEASE_INVALID", `${file} cannot be read as JSON (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
        }
        if (opts.files) raw = { ...raw, files: hashTree(resolve(opts.files)) };
        if (raw.created === undefined) raw.created = new Date().toISOString();
        const m = parseManifest(raw, file);
        const signed = signManifest(m, loadReleasePrivateKey(opts.key));
        const out = opts.out ?? join(opts.files ? resolve(opts.files) : dirname(resolve(file)), RELEASE_FILE);
        writeFileAtomic(out, JSON.stringify(signed, null, 2) + "\n", 0o644);
        report(opts.json, { out, version: m.version, counter: m.counter, files: Object.keys(m.files).length, key: signed.signatures[0]!.key }, () => `Signed ${m.version} (counter ${m.counter}, ${Object.keys(m.files).length} files) with ${signed.signatures[0]!.key}\nwrote ${out}`);
      },
    );
}

export function registerUpdateCommands(program: Command): Command {
  const update = program.command("update").description("Install only what the fleet signed: update-engine hooks and engine-less updates");
  update
    .command("hook <ENGINE> <STAGE>")
    .description("One step of an update engine's install (rauc, swupdate, mender): check the release, record the step, judge health after reboot")
    .option("--config <FILE>", "config file")
    .option("--bundle <DIR>", "the release's directory (default: from the engine's environment)")
    .option("--json", "print the result as JSON")
    .action(
      async (engine: string, stage: string, opts: Opts & { bundle?: string }) => {
        const loaded = loadConfig(locateConfig(opts.config));
        const r = await runHook(loaded, engine, stage, { bundle: opts.bundle });
        if (opts.json) report(true, r, () => "");
        // Engines show the hook's stderr (RAUC's install-check takes its message from there).
        process.stderr.write(r.message + "\n");
        process.exitCode = r.exitCode;
      },
    );
  update
    .command("verify <BUNDLE>")
    .description("Check a release folder: signature by a fleet key, device class, files, anti-rollback counter")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (bundle: string, opts: Opts) => {
        const r = verifyBundle(loadConfig(locateConfig(opts.config)), bundle);
        report(opts.json, { ok: true, version: r.manifest.version, counter: r.manifest.counter, device_class: r.manifest.device_class, key: r.key, files: Object.keys(r.manifest.files).length }, () => `OK ${r.manifest.version} (counter ${r.manifest.counter}, ${Object.keys(r.manifest.files).length} files) signed by ${r.key}`);
      },
    );
  update
    .command("apply <BUNDLE>")
    .description("Without an update engine: install a release folder beside the current one, switch `current` atomically, restart, health check; commit or roll back")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (bundle: string, opts: Opts) => {
        const at = process.env.GATEWARDEN_FAULT_KILL_AT; // fault injection for the kill -9 test
        const r = await applyUpdate(loadConfig(locateConfig(opts.config)), bundle, {
          onStep: (s) => {
            if (at === s) process.kill(process.pid, "SIGKILL");
          },
        });
        report(opts.json, r, () => r.message);
        if (!r.ok) process.exitCode = 1;
      },
    );
  update
    .command("rollback")
    .description("Undo an uncommitted `update apply`: `current` back to the previous release (a committed release is never rolled back)")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (opts: Opts) => {
        const message = await rollBack(loadConfig(locateConfig(opts.config)));
        report(opts.json, { ok: true, message }, () => message);
      },
    );
  update
    .command("status")
    .description("The current release, the committed anti-rollback counter, a pending update and the installed release folders")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (opts: Opts) => {
        const s = standaloneStatus(loadConfig(locateConfig(opts.config))) as { current: string | null; committed: { version: string | null; counter: number }; pending: { version: string; counter: number; engine: string } | null; releases: { version: string; counter: number | null }[] };
        report(opts.json, s, () =>
          [
            `current    ${s.current ?? "-"}`,
            `committed  ${s.committed.version ?? "-"} (counter ${s.committed.counter})`,
            `pending    ${s.pending ? `${s.pending.version} (counter ${s.pending.counter}, ${s.pending.engine})` : "-"}`,
            `releases   ${s.releases.map((r) => r.version).join(", ") || "-"}`,
          ].join("\n"),
        );
      },
    );
  return update;
}
