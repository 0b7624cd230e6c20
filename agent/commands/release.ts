import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { report } from "./_output";
import { DaemonError } from "../core/errors";
import { writeFileAtomic } from "../core/secret-files";
import { generateReleaseKey, hashTree, loadReleasePrivateKey, parseManifest, RELEASE_FILE, signManifest } from "../../firmware-hooks/release";
import { makeDirs } from "../core/dirs";

export interface Opts {
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
        makeDirs(dir, "--dir");
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
        let parsed: unknown;
        try {
          parsed = JSON.parse(readFileSync(file, "utf8"));
        } catch (e) {
          throw new DaemonError("RELEASE_INVALID", `${file} cannot be read as JSON (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
        }
        // Not an object (null, an array, a number): the schema names what is wrong with it.
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) parseManifest(parsed, file);
        let raw = parsed as Record<string, unknown>;
        if (opts.files) raw = { ...raw, files: hashTree(resolve(opts.files), { what: "--files", code: "RELEASE_INVALID" }) };
        if (raw.created === undefined) raw.created = new Date().toISOString();
        const m = parseManifest(raw, file);
        const signed = signManifest(m, loadReleasePrivateKey(opts.key));
        const out = opts.out ?? join(opts.files ? resolve(opts.files) : dirname(resolve(file)), RELEASE_FILE);
        writeFileAtomic(out, JSON.stringify(signed, null, 2) + "\n", 0o644);
        report(opts.json, { out, version: m.version, counter: m.counter, files: Object.keys(m.files).length, key: signed.signatures[0]!.key }, () => `Signed ${m.version} (counter ${m.counter}, ${Object.keys(m.files).length} files) with ${signed.signatures[0]!.key}\nwrote ${out}`);
      },
    );
}
