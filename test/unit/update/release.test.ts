import { statSync, writeFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isDaemonError } from "../../../agent/core/errors";
import { generateReleaseKey, hashTree, loadReleasePrivateKey, loadReleasePublicKeys, parseManifest, RELEASE_FILE, signManifest, verifyRelease } from "../../../firmware-hooks/release";
import { UpdateState } from "../../../firmware-hooks/state";
import { tempDir } from "../../helpers/fixture";

describe("release manifests and the anti-rollback counter", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => cleanups.splice(0).forEach((c) => c()));

  const setup = () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    generateReleaseKey(join(t.dir, "release.key"), join(t.dir, "release.pub"));
    const bundle = join(t.dir, "bundle");
    mkdirSync(join(bundle, "sub"), { recursive: true });
    writeFileSync(join(bundle, "app.tar"), "payload");
    writeFileSync(join(bundle, "sub", "hook.sh"), "#!/bin/sh\n");
    const m = parseManifest({ format: "gatewarden-release/1", version: "1.2.0", counter: 12, device_class: "pi", files: hashTree(bundle) }, "test");
    writeFileSync(join(bundle, RELEASE_FILE), JSON.stringify(signManifest(m, loadReleasePrivateKey(join(t.dir, "release.key")))));
    const keys = loadReleasePublicKeys([join(t.dir, "release.pub")]);
    return { dir: t.dir, bundle, keys };
  };
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      if (isDaemonError(e)) return e.code;
      throw e;
    }
    return "accepted";
  };

  it("the private key is 0600; a signed release verifies with its files", () => {
    const { dir, bundle, keys } = setup();
    expect(statSync(join(dir, "release.key")).mode & 0o777).toBe(0o600);
    const r = verifyRelease(bundle, { keys, deviceClass: "pi", minCounter: 12 });
    expect(r.manifest).toMatchObject({ version: "1.2.0", counter: 12, files: { "app.tar": expect.any(String), "sub/hook.sh": expect.any(String) } });
  });

  it("refuses, with a code each: other class, lower counter, changed/extra/missing file, altered manifest, unknown key", () => {
    const { dir, bundle, keys } = setup();
    expect(code(() => verifyRelease(bundle, { keys, deviceClass: "other", minCounter: 0 }))).toBe("RELEASE_MISMATCH");
    expect(code(() => verifyRelease(bundle, { keys, deviceClass: "pi", minCounter: 13 }))).toBe("RELEASE_ROLLBACK");
    writeFileSync(join(bundle, "extra"), "x");
    expect(code(() => verifyRelease(bundle, { keys, deviceClass: "pi", minCounter: 0 }))).toBe("RELEASE_MISMATCH");
    expect(code(() => verifyRelease(bundle, { keys, deviceClass: "pi", minCounter: 0, engineFiles: ["extra"] }))).toBe("accepted");
    writeFileSync(join(bundle, "app.tar"), "other payload");
    expect(code(() => verifyRelease(bundle, { keys, deviceClass: "pi", minCounter: 0, engineFiles: ["extra"] }))).toBe("RELEASE_MISMATCH");
    const f = join(bundle, RELEASE_FILE);
    writeFileSync(f, readFileSync(f, "utf8").replace('"counter":12', '"counter":13'));
    expect(code(() => verifyRelease(bundle, { keys, deviceClass: "pi", minCounter: 0 }))).toBe("RELEASE_UNTRUSTED");
    generateReleaseKey(join(dir, "other.key"), join(dir, "other.pub"));
    expect(code(() => verifyRelease(bundle, { keys: loadReleasePublicKeys([join(dir, "other.pub")]), deviceClass: "pi", minCounter: 0 }))).toBe("RELEASE_UNTRUSTED");
    writeFileSync(f, "{");
    expect(code(() => verifyRelease(bundle, { keys, deviceClass: "pi", minCounter: 0 }))).toBe("RELEASE_INVALID");
    expect(code(() => parseManifest({ format: "gatewarden-release/1", version: "1", counter: 1, device_class: "pi", files: { "../etc/passwd": "0".repeat(64) } }, "m"))).toBe("RELEASE_INVALID");
  });

  it("the counter never decreases, and an unreadable counter fails closed", () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const st = new UpdateState(join(t.dir, "state"));
    expect(st.committed().counter).toBe(0);
    st.commit(3, "1.0.0");
    st.commit(3, "1.0.0");
    expect(code(() => st.commit(2, "0.9.0"))).toBe("RELEASE_ROLLBACK");
    expect(new UpdateState(join(t.dir, "state")).committed()).toMatchObject({ counter: 3, version: "1.0.0" });
    writeFileSync(st.counterFile, "{tor");
    expect(code(() => st.committed())).toBe("UPDATE_STATE");
  });
});
