import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Builds dist/gatewarden.cjs once: tests that spawn the daemon run the real bundle. */
export default function setup(): void {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
  execFileSync(process.execPath, [join(root, "build", "build.mjs")], { cwd: root, stdio: "inherit" });
}
