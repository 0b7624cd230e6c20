import { afterAll, describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { serviceUser } from "../../../agent/doctor/checks";
import { tempDir } from "../../helpers/fixture";

describe("the doctor's service user", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  const root = (passwd: string) => {
    const r = join(t.dir, `r${Math.random().toString(36).slice(2)}`);
    mkdirSync(join(r, "etc"), { recursive: true });
    writeFileSync(join(r, "etc", "passwd"), passwd);
    return r;
  };

  it("is read from the root's etc/passwd", () => {
    expect(serviceUser(root("root:x:0:0::/root:/bin/sh\ngatewarden:x:998:997::/var/lib/gatewarden:/usr/sbin/nologin\n"), "gatewarden")).toEqual({ uid: 998, gid: 997 });
  });

  it("a line without numeric ids names no account (it was reported as `uid NaN`, ok)", () => {
    expect(serviceUser(root("gatewarden:x:abc:997::/:/bin/false\n"), "gatewarden")).toBeUndefined();
    expect(serviceUser(root("gatewarden\n"), "gatewarden")).toBeUndefined();
    expect(serviceUser(root("gatewarden:x::\n"), "gatewarden")).toBeUndefined();
  });

  it("a missing root or passwd is no account", () => {
    expect(serviceUser(join(t.dir, "none"), "gatewarden")).toBeUndefined();
  });
});
