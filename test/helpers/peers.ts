import { existsSync } from "node:fs";

/**
 * Independent peers (Mosquitto, pymodbus, socat, openssl) come from Debian packages. A test
 * that needs a missing one is skipped with the reason in its name; in CI
 * (GATEWARDEN_REQUIRE_PEERS=1) a missing peer is an error instead, so nothing skips silently.
 * Every helper that looks for a peer goes through `findPeer`.
 */
export function findPeer(paths: readonly string[]): string | undefined {
  const found = paths.find((p) => existsSync(p));
  if (!found && process.env.GATEWARDEN_REQUIRE_PEERS === "1") throw new Error(`${paths.join(" or ")} is required (GATEWARDEN_REQUIRE_PEERS=1) but missing: install it (see .ci/run)`);
  return found;
}

export function havePeer(path: string): boolean {
  return findPeer([path]) !== undefined;
}
