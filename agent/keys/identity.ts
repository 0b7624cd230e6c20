import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import nacl from "tweetnacl";
import { DaemonError } from "../core/errors";
import { publicKeyFromRaw, rawPublicKey } from "../core/sign";
import { ackKeyFromSocSecret, ackPublicKeyB64, ackPublicKeyFromB64 } from "../soc/ack";
import { readSecretFile, writeNewFiles } from "../core/secret-files";
import { fingerprint } from "../core/keys";

/** The device identity: an Ed25519 key pair, PEM (PKCS#8 / SPKI), private key 0600. */
export function generateDeviceKey(privPath: string, pubPath: string): KeyObject {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  writeNewFiles([
    { path: privPath, data: privateKey.export({ format: "pem", type: "pkcs8" }) as string, mode: 0o600 },
    { path: pubPath, data: publicKey.export({ format: "pem", type: "spki" }) as string, mode: 0o644 },
  ]);
  return privateKey;
}

/** What a device exports for the SOC's trust store (`gatewarden soc trust add FILE`). */
export interface DeviceTrust {
  device: string;
  alg: "ed25519";
  public_key: string;
  fingerprint: string;
}

export function exportTrust(device: string, key: KeyObject): DeviceTrust {
  const pub = createPublicKey(key);
  return { device, alg: "ed25519", public_key: rawPublicKey(pub).toString("base64"), fingerprint: fingerprint(pub) };
}

export function parseTrust(text: string, origin: string): DeviceTrust & { key: KeyObject } {
  let t: Partial<DeviceTrust>;
  try {
    t = JSON.parse(text) as Partial<DeviceTrust>;
  } catch {
    throw new DaemonError("TRUST_INVALID", `${origin} is not JSON (expected the output of \`gatewarden keys export-public\`)`);
  }
  if (typeof t !== "object" || t === null || Array.isArray(t)) throw new DaemonError("TRUST_INVALID", `${origin} is not a JSON object (expected the output of \`gatewarden keys export-public\`)`);
  if (typeof t.device !== "string" || !DEVICE_ID.test(t.device)) throw new DaemonError("TRUST_INVALID", `${origin}: "device" is missing or not a valid device id`);
  if (t.alg !== "ed25519") throw new DaemonError("TRUST_INVALID", `${origin}: "alg" must be "ed25519"`);
  const raw = Buffer.from(String(t.public_key ?? ""), "base64");
  if (raw.length !== 32) throw new DaemonError("TRUST_INVALID", `${origin}: "public_key" must be 32 bytes, base64`);
  const key = publicKeyFromRaw(raw);
  const fp = fingerprint(key);
  if (t.fingerprint !== undefined && t.fingerprint !== fp) throw new DaemonError("TRUST_INVALID", `${origin}: fingerprint does not match the public key`);
  return { device: t.device, alg: "ed25519", public_key: raw.toString("base64"), fingerprint: fp, key };
}

export const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** SOC sealing keys: X25519 (tweetnacl box), and the Ed25519 key its acks are signed with. */
export interface SocPublicKeyFile {
  alg: "x25519";
  public_key: string;
  /** Ed25519, base64: verifies the receiver's end-to-end acks (derived from the secret key). */
  ack_public_key: string;
}

/** soc.pub's contents for a SOC secret key. */
export function socPublicKeyFile(secret: Uint8Array): SocPublicKeyFile {
  return { alg: "x25519", public_key: Buffer.from(nacl.box.keyPair.fromSecretKey(secret).publicKey).toString("base64"), ack_public_key: ackPublicKeyB64(ackKeyFromSocSecret(secret)) };
}

export function generateSocKeys(secretPath: string, publicPath: string): SocPublicKeyFile {
  const kp = nacl.box.keyPair();
  const pub = socPublicKeyFile(kp.secretKey);
  writeNewFiles([
    { path: secretPath, data: JSON.stringify({ alg: "x25519", secret_key: Buffer.from(kp.secretKey).toString("base64") }) + "\n", mode: 0o600 },
    { path: publicPath, data: JSON.stringify(pub) + "\n", mode: 0o644 },
  ]);
  return pub;
}

export function loadSocSecretKey(path: string): Uint8Array {
  const raw = readSecretFile(path, "SOC secret key");
  return parseX25519(raw.toString("utf8"), "secret_key", path);
}

export function loadSocPublicKey(path: string): Uint8Array {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new DaemonError("KEY_INVALID", `SOC public key ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`);
  }
  return parseX25519(text, "public_key", path);
}

/**
 * The SOC's ack key from soc.pub; KEY_INVALID when the file has none (a soc.pub made before
 * end-to-end acks: print a new one with `gatewarden soc keys public`).
 */
export function loadSocAckPublicKey(path: string): KeyObject {
  let o: Record<string, unknown> | undefined;
  try {
    o = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    o = undefined;
  }
  const k = typeof o?.ack_public_key === "string" ? ackPublicKeyFromB64(o.ack_public_key) : undefined;
  if (!k) throw new DaemonError("KEY_INVALID", `${path} has no valid "ack_public_key" (the SOC's end-to-end ack key); write a current one with \`gatewarden soc keys public --dir DIR\` at the SOC, or set upstream.ack to broker`);
  return k;
}

function parseX25519(text: string, field: "secret_key" | "public_key", path: string): Uint8Array {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    if (o.alg !== "x25519") throw new Error('"alg" is not "x25519"');
    const k = Buffer.from(String(o[field] ?? ""), "base64");
    if (k.length !== 32) throw new Error(`"${field}" is not 32 bytes`);
    return new Uint8Array(k);
  } catch (e) {
    throw new DaemonError("KEY_INVALID", `${path} is not a Gatewarden X25519 key file (${(e as Error).message})`);
  }
}
