import { afterEach, describe, expect, it, vi } from "vitest";
import { findMosquitto } from "../../helpers/mosquitto";
import { findPeer } from "../../helpers/peers";
import { findOpenssl } from "../../helpers/tls";

// A missing peer skips a test locally and fails it in CI (GATEWARDEN_REQUIRE_PEERS=1): every
// helper that looks for one goes through findPeer.
describe("peer lookup", () => {
  afterEach(() => vi.unstubAllEnvs());
  const nowhere = ["/nonexistent/peer-binary"];

  it("a missing peer is undefined locally", () => {
    vi.stubEnv("GATEWARDEN_REQUIRE_PEERS", "");
    expect(findPeer(nowhere)).toBeUndefined();
    expect(findMosquitto(nowhere)).toBeUndefined();
    expect(findOpenssl(nowhere)).toBeUndefined();
  });

  it("a missing peer is an error with GATEWARDEN_REQUIRE_PEERS=1, for Mosquitto and openssl too", () => {
    vi.stubEnv("GATEWARDEN_REQUIRE_PEERS", "1");
    expect(() => findPeer(nowhere)).toThrow(/nonexistent\/peer-binary is required/);
    expect(() => findMosquitto(nowhere)).toThrow(/is required/);
    expect(() => findOpenssl(nowhere)).toThrow(/is required/);
  });
});
