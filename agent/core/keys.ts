/**
 * Ed25519 key files and fingerprints, as the device identity, releases and SOC commands use
 * them: private keys only from owner-only files (KEY_PERMISSIONS), KEY_INVALID naming the file.
 */
import { createHash, createPrivateKey, type KeyObject } from "node:crypto";
import { DaemonError } from "./errors";
import { readSecretFile } from "./secret-files";
import { rawPublicKey } from "./sign";

export function loadDeviceKey(path: string): KeyObject {
  return loadEd25519PrivateKey(path, "device private key");
}

/** An Ed25519 private key (PEM PKCS#8) from an owner-only file; `what` names it in errors. */
export function loadEd25519PrivateKey(path: string, what: string): KeyObject {
  const pem = readSecretFile(path, what);
  try {
    const k = createPrivateKey(pem);
    if (k.asymmetricKeyType !== "ed25519") throw new Error(`a ${k.asymmetricKeyType} key`);
    return k;
  } catch (e) {
    throw new DaemonError("KEY_INVALID", `${what} ${path} is not an Ed25519 PEM key (${(e as Error).message})`);
  }
}

export function fingerprint(pub: KeyObject): string {
  return "sha256:" + createHash("sha256").update(rawPublicKey(pub)).digest("hex");
}
