import { afterAll, describe, expect, it } from "vitest";
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { generateReleaseKey } from "../../../firmware-hooks/release";
import { gw } from "../../helpers/cli";
import { makeSite, tempDir } from "../../helpers/fixture";

/**
 * Release trees, manifests and update state that are not what they should be: each gets a
 * RELEASE_* / UPDATE_STATE / PATH_UNUSABLE error naming the file, never INTERNAL or a hang.
 */
describe("bad release and update input (built bundle)", () => {
  const t = tempDir("gw-badrel-");
  afterAll(t.cleanup);
  let n = 0;
  const key = join(t.dir, "release.key");
  generateReleaseKey(key, join(t.dir, "release.pub"));
  const manifest = join(t.dir, "m.json");
  writeFileSync(manifest, JSON.stringify({ format: "gatewarden-release/1", version: "1.0", counter: 1, device_class: "c" }));
  const site = () => {
    const s = makeSite(join(t.dir, `s${n}`), { device: `gw-${n++}` });
    appendFileSync(s.cfgFile, `\nupdate:\n  device_class: c\n  release_keys: [${join(t.dir, "release.pub")}]\n`);
    return s;
  };
  /** A signed bundle with app.bin, then `spoil` applied to it. */
  const bundle = (spoil: (dir: string) => void) => {
    const dir = join(t.dir, `b${n++}`);
    mkdirSync(dir);
    writeFileSync(join(dir, "app.bin"), "payload");
    expect(gw(["release", "sign", manifest, "--key", key, "--files", dir]).code).toBe(0);
    spoil(dir);
    return dir;
  };
  const fail = (r: { code: number; stderr: string }, code: string, text: RegExp) => {
    expect(r.stderr).toMatch(new RegExp(`^error\\[${code}\\]: `));
    expect(r.stderr).toMatch(text);
    expect(r.stderr).not.toMatch(/INTERNAL|    at /);
    expect(r.code).toBe(1);
  };

  it("release sign --files: a missing directory or a file is PATH_UNUSABLE naming --files", () => {
    fail(gw(["release", "sign", manifest, "--key", key, "--files", join(t.dir, "nope")]), "PATH_UNUSABLE", /--files directory .*nope cannot be used: it does not exist/);
    fail(gw(["release", "sign", manifest, "--key", key, "--files", manifest]), "PATH_UNUSABLE", /--files directory .*m\.json cannot be used: it is not a directory/);
  });

  it("release sign --files: a symlink (dangling, looping, to a file), FIFO or unreadable file is refused by name, never opened", () => {
    const cases: [string, (d: string) => void, RegExp][] = [
      ["dangling", (d) => symlinkSync("nothing", join(d, "app.bin")), /app\.bin is a symbolic link/],
      ["loop", (d) => symlinkSync("loop", join(d, "loop")), /loop is a symbolic link/],
      ["to a file", (d) => (writeFileSync(join(d, "real"), "x"), symlinkSync("real", join(d, "link"))), /link is a symbolic link/],
      ["fifo", (d) => execFileSync("mkfifo", [join(d, "pipe")]), /pipe is a FIFO/],
    ];
    for (const [what, make, text] of cases) {
      const dir = join(t.dir, `tree-${n++}`);
      mkdirSync(join(dir, "sub"), { recursive: true });
      writeFileSync(join(dir, "sub", "ok"), "x");
      make(dir);
      const r = gw(["release", "sign", manifest, "--key", key, "--files", dir]);
      expect(r.stderr, what).toMatch(/a release carries only regular files and directories/);
      fail(r, "RELEASE_INVALID", text);
    }
  });

  it("release sign: a manifest that is null or an array is RELEASE_INVALID naming the file", () => {
    for (const body of ["null", "[1]", "7"]) {
      const f = join(t.dir, `bad-${n++}.json`);
      writeFileSync(f, body);
      fail(gw(["release", "sign", f, "--key", key]), "RELEASE_INVALID", new RegExp(`${f}: \\(top level\\): .*expected object`));
    }
  });

  it("update verify/apply and the rauc install-check refuse a bundle with a symlink or FIFO by name", () => {
    const s = site();
    const dangling = bundle((d) => (execFileSync("rm", [join(d, "app.bin")]), symlinkSync("nothing", join(d, "app.bin"))));
    for (const args of [["update", "verify", dangling], ["update", "apply", dangling]]) {
      fail(gw([...args, "--config", s.cfgFile]), "RELEASE_MISMATCH", /app\.bin is a symbolic link; a release carries only regular files/);
    }
    const hook = gw(["update", "hook", "rauc", "install-check", "--bundle", dangling, "--config", s.cfgFile]);
    expect(hook.code).not.toBe(0);
    expect(hook.stderr).toMatch(/RELEASE_MISMATCH.*app\.bin is a symbolic link/);
    expect(hook.stderr).not.toMatch(/INTERNAL/);
    const fifo = bundle((d) => (execFileSync("rm", [join(d, "app.bin")]), execFileSync("mkfifo", [join(d, "app.bin")])));
    fail(gw(["update", "verify", fifo, "--config", s.cfgFile]), "RELEASE_MISMATCH", /app\.bin is a FIFO/);
    const fifoManifest = bundle((d) => (execFileSync("rm", [join(d, "gatewarden-release.json")]), execFileSync("mkfifo", [join(d, "gatewarden-release.json")])));
    fail(gw(["update", "verify", fifoManifest, "--config", s.cfgFile]), "RELEASE_INVALID", /gatewarden-release\.json is a FIFO/);
  });

  it("update status/verify/rollback: counter.json or pending.json holding null, a FIFO or a releases_dir file is UPDATE_STATE naming it, never counter 0", () => {
    const s = site();
    const state = join(s.gwDir, "data", "update");
    mkdirSync(state, { recursive: true });
    const good = bundle(() => undefined);
    const counter = join(state, "counter.json");
    writeFileSync(counter, "null");
    for (const args of [["update", "status"], ["update", "verify", good]]) fail(gw([...args, "--config", s.cfgFile]), "UPDATE_STATE", new RegExp(`${counter} holds null, not a JSON object`));
    rmSync(counter);
    execFileSync("mkfifo", [counter]);
    fail(gw(["update", "verify", good, "--config", s.cfgFile]), "UPDATE_STATE", new RegExp(`${counter} is not a regular file`));
    rmSync(counter);
    const pending = join(state, "pending.json");
    writeFileSync(pending, "null");
    for (const args of [["update", "status"], ["update", "rollback"]]) fail(gw([...args, "--config", s.cfgFile]), "UPDATE_STATE", new RegExp(`${pending} holds null, not a JSON object`));
    writeFileSync(pending, JSON.stringify({ version: "1.0", counter: 1 }));
    fail(gw(["update", "status", "--config", s.cfgFile]), "UPDATE_STATE", new RegExp(`${pending} is malformed: "engine"`));
    rmSync(pending);
    appendFileSync(s.cfgFile, `  releases_dir: ${manifest}\n`);
    fail(gw(["update", "status", "--config", s.cfgFile]), "UPDATE_STATE", new RegExp(`update.releases_dir ${manifest} cannot be listed \\(it is not a directory`));
  });

  it("integrity accept: an audit that cannot be recorded leaves the old manifest; a manifest_path under /proc names integrity.manifest_path", () => {
    const s = site();
    const hook = join(t.dir, `hook-${n++}.sh`);
    writeFileSync(hook, "#!/bin/sh\n");
    appendFileSync(s.cfgFile, `\nintegrity:\n  paths: [${hook}]\n`);
    expect(gw(["integrity", "accept", "--config", s.cfgFile]).code).toBe(0);
    const manifestFile = join(s.gwDir, "data", "integrity.json");
    const before = readFileSync(manifestFile, "utf8");
    writeFileSync(hook, "#!/bin/sh\necho changed\n");
    const outbox = join(s.gwDir, "data", "outbox.db");
    renameSync(outbox, `${outbox}.good`);
    writeFileSync(outbox, "garbage");
    fail(gw(["integrity", "accept", "--config", s.cfgFile]), "OUTBOX_OPEN", /outbox/);
    expect(readFileSync(manifestFile, "utf8")).toBe(before);
    expect(existsSync(`${manifestFile}.accepting`)).toBe(false);
    expect(gw(["integrity", "check", "--config", s.cfgFile]).stdout).toMatch(/drift/);
    rmSync(outbox);
    renameSync(`${outbox}.good`, outbox);
    appendFileSync(s.cfgFile, "  manifest_path: /proc/self/gw-integrity.json\n");
    fail(gw(["integrity", "accept", "--config", s.cfgFile]), "PATH_UNUSABLE", /^error\[PATH_UNUSABLE\]: integrity\.manifest_path \/proc\/self\/gw-integrity\.json/);
  });

  it("integrity check/accept: a measured file that cannot be read (integrity.paths: [/proc/self]) is PATH_UNUSABLE naming it, no manifest taken", () => {
    const s = site();
    appendFileSync(s.cfgFile, "\nintegrity:\n  paths: [/proc/self]\n");
    for (const cmd of ["check", "accept"]) {
      fail(gw(["integrity", cmd, "--config", s.cfgFile]), "PATH_UNUSABLE", /^error\[PATH_UNUSABLE\]: integrity: the measured file \/proc\/\d+\/\S+ cannot be read \(E[A-Z]+\); make it readable or take it out of integrity\.paths$/m);
    }
    expect(existsSync(join(s.gwDir, "data", "integrity.json"))).toBe(false);
  });
});
