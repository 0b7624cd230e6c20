import { afterEach, describe, expect, it } from "vitest";
import { readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gw } from "../helpers/cli";
import { tempDir } from "../helpers/fixture";
import { mountUnavailable, smallTmpfs } from "./_storage";

// write(2) on a full filesystem may write part of a buffer and return its length; a single
// writeSync took that for success. `gatewarden init` on a nearly full card then left a torn key
// or config behind (and INTERNAL), and the next `init` refused with KEY_EXISTS.
const why = mountUnavailable();

/** Every file under `dir`, relative to it. */
function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name).slice(dir.length + 1)).sort();
}

describe("files written on a full card", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.reverse()) c();
    cleanups.length = 0;
  });

  it.skipIf(why !== undefined)(`init makes a whole gateway or nothing, and says which file the full disk stopped${why ? ` [skipped: ${why}]` : ""}`, () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const fs = smallTmpfs(t.dir, 1);
    cleanups.push(() => fs.unmount());
    const filler = join(fs.mnt, "filler");
    const dir = join(fs.mnt, "gw");
    const outcomes = new Set<string>();
    // Free pages from none to more than init needs (the key and its public half take a page each,
    // the config one or two, the schema about 20): each file in turn is the one the disk stops.
    for (const pages of [0, 1, 2, 3, 4, 6, 48]) {
      rmSync(dir, { recursive: true, force: true });
      rmSync(filler, { force: true });
      const st = statfsSync(fs.mnt);
      writeFileSync(filler, Buffer.alloc((st.bavail - pages) * st.bsize));
      const r = gw(["init", "--dir", dir, "--device-id", "gw-full"]);
      if (r.code === 0) {
        expect(files(dir)).toEqual(["gatewarden.schema.json", "gatewarden.yaml", "keys/device.key", "keys/device.pub"]);
        outcomes.add("made");
        continue;
      }
      expect(r.code, r.stderr).toBe(1);
      const m = /^error\[PATH_UNUSABLE\]: (?:file|directory) (\S+) cannot be used: the disk is full \(ENOSPC\)$/m.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      outcomes.add(m![1]!.slice(dir.length + 1) || "(dir)");
      expect(files(fs.mnt)).toEqual(["filler"]);
    }
    // The key, its public half, the config and the schema each stopped it, and with room init succeeded.
    expect([...outcomes]).toEqual(expect.arrayContaining(["keys/device.key", "keys/device.pub", "gatewarden.yaml", "gatewarden.schema.json", "made"]));
  });
});
