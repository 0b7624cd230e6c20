import { existsSync } from "node:fs";

/**
 * Independent peers (Mosquitto, pymodbus, socat, openssl) come from Debian packages. A test
 * that needs a missing one is skipped with the reason in its name; in CI
 * (GATEWARDEN_REQUIRE_PEERS=1) a missing peer is an error instead, so nothing skips silently.
 */
export function havePeer(path: string): boolean {
  const ok = existsSync(path);
  if (!ok && process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error(`${path} is required (GATEWARDEN_REQUIRE_PEERS=1) but missing: install it (see .ci/run)`);
  return ok;
}
