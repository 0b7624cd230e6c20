import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "pino";
import type { Recorder } from "../events/recorder";
import { rawPublicKey } from "../core/sign";
import { ParallelSigner } from "../events/signer";
import type { Outbox } from "../outbox/store";
import { writeFileAtomic, writeNewFile } from "../core/secret-files";
import { fingerprint, loadDeviceKey, loadEd25519PrivateKey } from "../core/keys";
import { rotationDraft } from "./key-events";

/**
 * Key rotation on the gateway, safe against a crash at any point:
 *
 *   1. the new key is written beside the current one as `<key>.pending` (0600, fsynced);
 *   2. the announcement (signed by the current key) is committed together with the new key's
 *      fingerprint in the outbox (`signing_key`);
 *   3. the pending key replaces the current one (rename), its public key goes to the .pub file.
 *
 * At start (`signingKeyAtStart`): a pending key the outbox names was announced, so it is
 * promoted now (a crash between 2 and 3); one it does not name was never announced, and the
 * daemon announces it after its boot event (a crash between 1 and 2). Either way the chain
 * goes on under one key at a time, and the old key never signs past its announcement.
 */
export function pendingKeyPath(keyPath: string): string {
  return `${keyPath}.pending`;
}

/** The public key file beside a private key: keys/device.key -> keys/device.pub. */
export function publicKeyPath(keyPath: string): string {
  return keyPath.endsWith(".key") ? `${keyPath.slice(0, -4)}.pub` : `${keyPath}.pub`;
}

export interface RotationResult {
  device: string;
  old_fingerprint: string;
  new_fingerprint: string;
  /** The announcement's position; the new key signs from `from_seq` on. */
  boot: number;
  seq: number;
  from_seq: number;
}

/**
 * Steps 2 and 3 for `next` (staged by `stagePendingKey`): announces it in an event signed by
 * `current`, switches the recorder to it and promotes it. When the announcement cannot commit,
 * nothing changed: the pending key is dropped and the error thrown.
 */
export function announceRotation(o: { device: string; keyPath: string; recorder: Recorder; current: KeyObject; next: KeyObject; by: string }): RotationResult {
  const oldFp = fingerprint(createPublicKey(o.current));
  const pub = createPublicKey(o.next);
  const fp = fingerprint(pub);
  const signer = new ParallelSigner(o.next);
  let env;
  try {
    env = o.recorder.rotateKey(signer, fp, (seq) => rotationDraft({ public_key: rawPublicKey(pub).toString("base64"), fingerprint: fp, old_fingerprint: oldFp, from_seq: seq + 1, by: o.by }, o.recorder.bootEpoch));
  } catch (e) {
    // The announcement's transaction did not commit: the pending key was never announced.
    signer.close();
    rmSync(pendingKeyPath(o.keyPath), { force: true });
    throw e;
  }
  promoteKey(o.keyPath, o.next);
  return { device: o.device, old_fingerprint: oldFp, new_fingerprint: fp, boot: env.boot, seq: env.seq, from_seq: env.seq + 1 };
}

/** The key that signs at start, and a rotation still to be announced. */
export function signingKeyAtStart(keyPath: string, outbox: Outbox, log: Logger): { key: KeyObject; pending?: KeyObject } {
  const key = loadDeviceKey(keyPath);
  const pp = pendingKeyPath(keyPath);
  if (!existsSync(pp)) return { key };
  const next = loadEd25519PrivateKey(pp, "pending device key (an unfinished `gatewarden keys rotate`)");
  const fp = fingerprint(createPublicKey(next));
  if (outbox.signingKey() === fp) {
    promoteKey(keyPath, next);
    log.warn({ fingerprint: fp }, "A key rotation was announced but not finished before the last stop; the new key now signs.");
    return { key: next };
  }
  log.warn({ fingerprint: fp }, "A key rotation was started but not announced before the last stop; announcing it now.");
  return { key, pending: next };
}

/** The pending key: the one a crashed rotation left, or a new one (0600). */
export function stagePendingKey(keyPath: string): KeyObject {
  const pp = pendingKeyPath(keyPath);
  if (existsSync(pp)) return loadEd25519PrivateKey(pp, "pending device key");
  const { privateKey } = generateKeyPairSync("ed25519");
  writeNewFile(pp, privateKey.export({ format: "pem", type: "pkcs8" }) as string, 0o600);
  syncDir(dirname(pp));
  return privateKey;
}


/** Step 3: the announced key replaces the current one. */
export function promoteKey(keyPath: string, next: KeyObject): void {
  writeFileAtomic(publicKeyPath(keyPath), createPublicKey(next).export({ format: "pem", type: "spki" }) as string, 0o644);
  renameSync(pendingKeyPath(keyPath), keyPath);
  syncDir(dirname(keyPath));
}

function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
