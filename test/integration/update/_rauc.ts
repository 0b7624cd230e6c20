import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../../helpers/cli";
import { havePeer } from "../../helpers/peers";

export function runAsync(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    c.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    c.once("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** RAUC, its session bus, squashfs and openssl from Debian; root for loop mounts. */
export function haveRauc(): boolean {
  const peers = ["/usr/bin/rauc", "/usr/bin/dbus-daemon", "/usr/bin/mksquashfs", "/usr/bin/openssl", "/usr/bin/unshare"].every((p) => havePeer(p));
  const root = process.getuid?.() === 0;
  if (!root && process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error("the RAUC tests mount bundles on loop devices and need root (GATEWARDEN_REQUIRE_PEERS=1)");
  return peers && root;
}

export const HOOKS = join(ROOT, "firmware-hooks");
/** How the hook scripts call Gatewarden: the built bundle. */
export const GATEWARDEN = `${process.execPath} ${join(ROOT, "dist", "gatewarden.cjs")}`;

/**
 * A RAUC test system: two file-backed raw slots (A, B), a custom bootloader backend script
 * keeping its state in files, a private D-Bus session bus, and `rauc service` in its own
 * mount namespace whose /proc/cmdline says which slot is booted (`rauc.slot=`). `reboot()`
 * plays the bootloader: it boots the primary slot unless that slot is marked bad.
 */
export class RaucSystem {
  readonly dir: string;
  private dbus: ChildProcess | undefined;
  private service: ChildProcess | undefined;
  busAddress = "";
  serviceLog = "";

  constructor(
    root: string,
    private readonly hookEnv: Record<string, string>,
  ) {
    this.dir = join(root, "rauc");
    mkdirSync(join(this.dir, "boot"), { recursive: true });
    mkdirSync(join(this.dir, "mnt"), { recursive: true });
    mkdirSync(join(this.dir, "data"), { recursive: true });
    for (const s of ["A", "B"]) writeFileSync(join(this.dir, `slot${s}.img`), Buffer.alloc(256 * 1024));
    const boot = join(this.dir, "bootloader.sh");
    writeFileSync(
      boot,
      `#!/bin/sh
D=${join(this.dir, "boot")}
echo "$*" >> "$D/log"
case "$1" in
  get-primary) cat "$D/primary" 2>/dev/null || echo A ;;
  set-primary) echo "$2" > "$D/primary"; echo good > "$D/state.$2" ;;
  get-state) cat "$D/state.$2" 2>/dev/null || echo good ;;
  set-state) echo "$3" > "$D/state.$2" ;;
  *) exit 1 ;;
esac
`,
    );
    chmodSync(boot, 0o755);
    writeFileSync(join(this.dir, "booted"), "A");
    writeFileSync(
      join(this.dir, "system.conf"),
      `[system]
compatible=gatewarden-test
bootloader=custom
mountprefix=${join(this.dir, "mnt")}
data-directory=${join(this.dir, "data")}

[keyring]
path=${join(this.dir, "ca.pem")}

[handlers]
bootloader-custom-backend=${boot}
pre-install=${join(HOOKS, "rauc", "pre-install")}
post-install=${join(HOOKS, "rauc", "post-install")}

[slot.rootfs.0]
device=${join(this.dir, "slotA.img")}
type=raw
bootname=A

[slot.rootfs.1]
device=${join(this.dir, "slotB.img")}
type=raw
bootname=B
`,
    );
    // The signing CA RAUC trusts (its keyring) and a bundle signing certificate.
    const ssl = (...args: string[]) => {
      const r = spawnSync("openssl", args, { cwd: this.dir, encoding: "utf8" });
      if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr}`);
    };
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Test fleet CA", "-days", "30", "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "signer.key", "-out", "signer.csr", "-subj", "/CN=Test bundle signer");
    writeFileSync(join(this.dir, "signer.ext"), "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
    ssl("x509", "-req", "-in", "signer.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "signer.pem", "-days", "30", "-extfile", "signer.ext");
  }

  get env(): NodeJS.ProcessEnv {
    return { ...process.env, ...this.hookEnv, DBUS_SESSION_BUS_ADDRESS: this.busAddress, DBUS_STARTER_BUS_TYPE: "session" };
  }

  async start(): Promise<void> {
    const dbus = spawn("dbus-daemon", ["--session", "--nofork", "--print-address=1"], { stdio: ["ignore", "pipe", "pipe"] });
    this.dbus = dbus;
    this.busAddress = await new Promise<string>((resolve, reject) => {
      let buf = "";
      dbus.stdout!.on("data", (d: Buffer) => {
        buf += d.toString();
        const nl = buf.indexOf("\n");
        if (nl >= 0) resolve(buf.slice(0, nl).trim());
      });
      dbus.once("exit", (c) => reject(new Error(`dbus-daemon exited (${c})`)));
    });
    await this.startService();
  }

  booted(): string {
    return readFileSync(join(this.dir, "booted"), "utf8").trim();
  }

  /** `rauc service` with /proc/cmdline saying rauc.slot=<booted>, in a private mount namespace. */
  private async startService(): Promise<void> {
    writeFileSync(join(this.dir, "cmdline"), `rauc.slot=${this.booted()}\n`);
    const svc = spawn("unshare", ["-m", "sh", "-c", `mount --bind ${join(this.dir, "cmdline")} /proc/cmdline && exec rauc service --conf=${join(this.dir, "system.conf")}`], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.service = svc;
    const keep = (d: Buffer) => (this.serviceLog = (this.serviceLog + d.toString()).slice(-50_000));
    svc.stdout!.on("data", keep);
    svc.stderr!.on("data", keep);
    const end = Date.now() + 20_000;
    for (;;) {
      const r = await this.rauc(["status", "--output-format=json"]);
      if (r.status === 0 && (JSON.parse(r.stdout) as { booted?: string }).booted === this.booted()) return;
      if (svc.exitCode !== null || Date.now() > end) throw new Error(`rauc service did not come up: ${this.serviceLog}${r.stderr}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  private async stopService(): Promise<void> {
    const svc = this.service;
    if (!svc || svc.exitCode !== null) return;
    const gone = new Promise((r) => svc.once("exit", r));
    svc.kill("SIGTERM");
    await gone;
  }

  /** Runs a command without blocking the event loop (the broker and receiver live in this process). */
  run(cmd: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return runAsync(cmd, args, this.env);
  }

  rauc(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return this.run("rauc", args);
  }

  state(bootname: string): string {
    const f = join(this.dir, "boot", `state.${bootname}`);
    return existsSync(f) ? readFileSync(f, "utf8").trim() : "good";
  }

  /** The bootloader's choice: the primary slot unless it is marked bad, else the other one. */
  async reboot(): Promise<string> {
    await this.stopService();
    const f = join(this.dir, "boot", "primary");
    const primary = existsSync(f) ? readFileSync(f, "utf8").trim() : "A";
    const next = this.state(primary) === "bad" ? (primary === "A" ? "B" : "A") : primary;
    writeFileSync(join(this.dir, "booted"), next);
    await this.startService();
    return next;
  }

  /** A bundle: content dir with an image, RAUC manifest with Gatewarden's hooks; `prepare` signs the release. */
  bundle(name: string, version: string, prepare: (content: string) => void): string {
    const content = join(this.dir, `content-${name}`);
    mkdirSync(content, { recursive: true });
    writeFileSync(join(content, "rootfs.img"), Buffer.from(`${name} ${version} `.repeat(2000)));
    copyFileSync(join(HOOKS, "rauc", "bundle-hook"), join(content, "bundle-hook"));
    chmodSync(join(content, "bundle-hook"), 0o755);
    writeFileSync(
      join(content, "manifest.raucm"),
      `[update]\ncompatible=gatewarden-test\nversion=${version}\n\n[bundle]\nformat=plain\n\n[hooks]\nfilename=bundle-hook\nhooks=install-check\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=post-install\n`,
    );
    prepare(content);
    const out = join(this.dir, `${name}.raucb`);
    const r = spawnSync("rauc", ["bundle", "--cert", join(this.dir, "signer.pem"), "--key", join(this.dir, "signer.key"), content, out], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`rauc bundle: ${r.stderr}`);
    return out;
  }

  async stop(): Promise<void> {
    await this.stopService();
    if (this.dbus && this.dbus.exitCode === null) {
      const gone = new Promise((r) => this.dbus!.once("exit", r));
      this.dbus.kill("SIGTERM");
      await gone;
    }
  }
}
