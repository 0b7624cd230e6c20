import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../helpers/cli";
import { sleep } from "../helpers/fixture";

/** The LazyFS binary `build/lazyfs.sh` makes (or $GATEWARDEN_LAZYFS). */
export const LAZYFS = process.env.GATEWARDEN_LAZYFS ?? join(ROOT, ".cache", "lazyfs", "lazyfs");
export const HAVE_FUSE = existsSync("/dev/fuse");

/**
 * A LazyFS mount: writes reach `disk/` only when fsynced; `cut()` drops everything unsynced,
 * exactly what a power cut does to a disk cache (the program is frozen first, so nothing more
 * reaches the disk, then killed).
 */
export class LazyFs {
  readonly mnt: string;
  private readonly disk: string;
  private readonly st: string;
  private proc: ChildProcess | undefined;
  private doneFd: number | undefined;

  constructor(root: string) {
    this.mnt = join(root, "mnt");
    this.disk = join(root, "disk");
    this.st = join(root, "st");
    // LazyFS ignores --config-path when the path contains "-o" in any case (it takes it for a
    // mount option) and then fails on its default config: a temp dir like gw-powercut-OekrLU.
    if (/-o/i.test(join(this.st, "lazyfs.toml"))) throw new Error(`LazyFS cannot take a config path containing "-o": ${this.st} (choose another directory)`);
    for (const d of [this.mnt, this.disk, this.st]) mkdirSync(d, { recursive: true });
    for (const f of ["faults.fifo", "done.fifo"]) if (!existsSync(join(this.st, f))) spawnSync("mkfifo", [join(this.st, f)]);
    writeFileSync(
      join(this.st, "lazyfs.toml"),
      [
        "[faults]",
        `fifo_path="${join(this.st, "faults.fifo")}"`,
        `fifo_path_completed="${join(this.st, "done.fifo")}"`,
        "[cache]",
        "apply_eviction=false",
        "[cache.simple]",
        'custom_size="1gb"',
        "blocks_per_page=1",
        "[filesystem]",
        "log_all_operations=false",
        `logfile="${join(this.st, "lazyfs.log")}"`,
        "",
      ].join("\n"),
    );
  }

  async mount(): Promise<void> {
    // LazyFS opens done.fifo for writing at start: hold it open read-write so that never blocks.
    this.doneFd ??= openSync(join(this.st, "done.fifo"), "r+");
    const p = spawn(LAZYFS, [this.mnt, "--config-path", join(this.st, "lazyfs.toml"), "-o", "modules=subdir", "-o", `subdir=${this.disk}`, "-f"], { stdio: ["ignore", "ignore", "pipe"] });
    this.proc = p;
    let err = "";
    p.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    // A bound, not a wait: a FUSE mount on 2 shared cores beside a second test run once took over 20 s.
    const start = Date.now();
    while (!this.mounted()) {
      const how = p.exitCode !== null || p.signalCode !== null ? `LazyFS exited (${p.exitCode ?? p.signalCode})` : Date.now() - start > 60_000 ? "not mounted after 60 s" : undefined;
      if (how) throw new Error(`LazyFS did not mount ${this.mnt}: ${how}; its stderr: ${err || "(empty)"}`);
      await sleep(50);
    }
  }

  mounted(): boolean {
    return readFileSync("/proc/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === this.mnt);
  }

  /** The power cut: freeze `pid`, drop every unsynced byte, kill `pid`, unmount. */
  async cut(pid: number): Promise<void> {
    process.kill(pid, "SIGSTOP");
    writeFileSync(join(this.st, "faults.fifo"), "lazyfs::clear-cache\n");
    const buf = Buffer.alloc(64);
    readSync(this.doneFd!, buf, 0, buf.length, null); // "done" once the cache is dropped
    process.kill(pid, "SIGKILL");
    await this.unmount();
  }

  async unmount(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    for (let i = 0; i < 100 && this.mounted(); i++) {
      spawnSync("fusermount3", ["-u", this.mnt]);
      if (this.mounted()) await sleep(100);
    }
    if (p && p.exitCode === null) {
      p.kill("SIGTERM");
      await new Promise((r) => p.once("exit", r));
    }
  }

  async close(): Promise<void> {
    await this.unmount();
    if (this.doneFd !== undefined) closeSync(this.doneFd);
    this.doneFd = undefined;
  }
}
