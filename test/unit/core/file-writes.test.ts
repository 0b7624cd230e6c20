import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeDirs } from "../../../agent/core/dirs";
import { readSecretFile, writeFileAtomic, writeNewFile } from "../../../agent/core/secret-files";
import { tempDir } from "../../helpers/fixture";

/** Why this process cannot change files' owners (a skip), or undefined as root; CI requires root. */
function asRoot(): string | undefined {
  const why = process.getuid?.() !== 0 ? "not root: cannot give a file another owner" : undefined;
  if (why && process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error(`changing a file's owner needs root (GATEWARDEN_REQUIRE_PEERS=1): ${why}`);
  return why;
}

/** Where an operator points a command's output or a key: what is written, what is refused, and nothing is destroyed. */
describe("file writes and key reads on paths that are not plain files", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("a linked file stays linked: the file it points to is replaced, not the link", () => {
    const real = join(t.dir, "real.yaml");
    const link = join(t.dir, "link.yaml");
    writeFileSync(real, "old\n");
    symlinkSync(real, link);
    writeFileAtomic(link, "new\n", 0o644);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe(real);
    expect(readFileSync(real, "utf8")).toBe("new\n");
  });

  it("a character device is written to, never renamed over (as root, /dev/full became a regular file)", () => {
    const before = statSync("/dev/null");
    writeFileAtomic("/dev/null", "x".repeat(10_000), 0o644);
    const after = lstatSync("/dev/null");
    expect(after.isCharacterDevice()).toBe(true);
    expect(after.rdev).toBe(before.rdev);
    expect(() => writeFileAtomic("/dev/full", "x", 0o644)).toThrow(/^file \/dev\/full cannot be used: the disk is full \(ENOSPC\)$/);
    expect(lstatSync("/dev/full").isCharacterDevice()).toBe(true);
  });

  it("a directory or a FIFO is refused by name and left in place", () => {
    const dir = join(t.dir, "adir");
    mkdirSync(dir);
    expect(() => writeFileAtomic(dir, "x", 0o644)).toThrow(`file ${dir} cannot be used: it is a directory (EISDIR)`);
    expect(statSync(dir).isDirectory()).toBe(true);
    const fifo = join(t.dir, "fifo");
    execFileSync("mkfifo", [fifo]);
    expect(() => writeFileAtomic(fifo, "x", 0o644)).toThrow(`file ${fifo} cannot be used: it is not a regular file (a FIFO, socket or block device)`);
    expect(lstatSync(fifo).isFIFO()).toBe(true);
  });

  it("a missing directory and a file system that cannot create files are told apart", () => {
    expect(() => writeFileAtomic(join(t.dir, "none", "x.json"), "x", 0o644)).toThrow(/its directory does not exist \(ENOENT\)$/);
    expect(() => writeFileAtomic("/proc/gatewarden-x", "x", 0o644)).toThrow(/this file system does not allow creating it \(ENOENT\)$/);
  });

  it("a new file gets the given mode; a replaced file keeps its own mode exactly (no umask)", () => {
    const file = join(t.dir, "policy.yaml");
    writeFileAtomic(file, "a\n", 0o640);
    expect(statSync(file).mode & 0o7777).toBe(0o640);
    chmodSync(file, 0o664); // group-writable: a umask of 022 would have taken that away
    writeFileAtomic(file, "b\n", 0o644);
    expect(statSync(file).mode & 0o7777).toBe(0o664);
    expect(readFileSync(file, "utf8")).toBe("b\n");
  });

  it("a replaced file keeps its owner and group (root editing root:gatewarden 0640 leaves the daemon able to read it)", () => {
    const why = asRoot();
    if (why) return void console.warn(`skipped: ${why}`);
    const file = join(t.dir, "gatewarden.yaml");
    writeFileSync(file, "old\n");
    chownSync(file, 0, 65534);
    chmodSync(file, 0o640);
    writeFileAtomic(file, "new\n", 0o600);
    const st = statSync(file);
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 65534, 0o640]);
    expect(readFileSync(file, "utf8")).toBe("new\n");
  });

  it("what root creates in another user's directory is that user's: directories, new files, new keys", () => {
    const why = asRoot();
    if (why) return void console.warn(`skipped: ${why}`);
    const state = join(t.dir, "state");
    mkdirSync(state, { mode: 0o700 });
    chownSync(state, 65534, 65534);
    makeDirs(join(state, "update", "x"), "update state directory");
    writeFileAtomic(join(state, "update", "counter.json"), "{}\n", 0o600);
    writeNewFile(join(state, "update", "x", "new.key"), "k\n", 0o600);
    const own = (p: string) => {
      const st = statSync(join(state, p));
      return [st.uid, st.gid, st.mode & 0o777];
    };
    expect(own("update")).toEqual([65534, 65534, 0o700]);
    expect(own("update/x")).toEqual([65534, 65534, 0o700]);
    expect(own("update/counter.json")).toEqual([65534, 65534, 0o600]);
    expect(own("update/x/new.key")).toEqual([65534, 65534, 0o600]);
    // A directory root owns keeps what root makes in it root's.
    writeFileAtomic(join(t.dir, "root-owned.json"), "{}\n", 0o600);
    expect(statSync(join(t.dir, "root-owned.json")).uid).toBe(0);
  });

  it("a key path naming a directory is KEY_INVALID naming it, not EISDIR", () => {
    const dir = join(t.dir, "device.key");
    mkdirSync(dir, { mode: 0o700 });
    expect(() => readSecretFile(dir, "device key")).toThrow(expect.objectContaining({ code: "KEY_INVALID", message: `device key ${dir} is a directory; name the key file` }));
  });
});
