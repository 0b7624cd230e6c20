import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readSecretFile, writeFileAtomic } from "../../../agent/core/secret-files";
import { tempDir } from "../../helpers/fixture";

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

  it("a key path naming a directory is KEY_INVALID naming it, not EISDIR", () => {
    const dir = join(t.dir, "device.key");
    mkdirSync(dir, { mode: 0o700 });
    expect(() => readSecretFile(dir, "device key")).toThrow(expect.objectContaining({ code: "KEY_INVALID", message: `device key ${dir} is a directory; name the key file` }));
  });
});
