/**
 * The identity an OPC UA session acts as, read from the configured files: a user name and its
 * password, or an X.509 user certificate and its RSA key (what the OPC UA security policies
 * sign user tokens with). Secret files must be owner-only (`readSecretFile`). Read for every
 * new session, so a rotated password or certificate is used at the next reconnect; checked
 * once at start, so a broken or loose file stops the daemon before anything connects.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readSecretFile } from "../../agent/core/secret-files";
import { DaemonError } from "../../agent/core/errors";
import type { OpcuaServerConfig } from "./config";

export type UserCredentials =
  | { kind: "anonymous" }
  | { kind: "password"; username: string; password: string }
  | { kind: "certificate"; certificate: Buffer; subject: string; keyPem: string };

export function loadUserCredentials(server: OpcuaServerConfig): UserCredentials {
  const u = server.user;
  if (!u) return { kind: "anonymous" };
  if ("password_file" in u) {
    const password = readSecretFile(u.password_file, `OPC UA server ${server.name} password file`).toString("utf8").replace(/\r?\n$/, "");
    return { kind: "password", username: u.username, password };
  }
  const keyBytes = readSecretFile(u.key_file, `OPC UA server ${server.name} user key_file`);
  const fail = (why: string, cause?: unknown): never => {
    throw new DaemonError("OPCUA_SETUP", `opcua server ${server.name} user: ${why}`, cause === undefined ? undefined : { cause });
  };
  let cert: X509Certificate | undefined;
  try {
    cert = new X509Certificate(readFileSync(u.certificate_file));
  } catch (e) {
    fail(`certificate_file ${u.certificate_file} cannot be read as a certificate (${(e as Error).message})`, e);
  }
  let key: KeyObject | undefined;
  try {
    key = keyBytes.includes("-----BEGIN") ? createPrivateKey(keyBytes) : createPrivateKey({ key: keyBytes, format: "der", type: "pkcs8" });
  } catch (e) {
    fail(`key_file ${u.key_file} cannot be read as a private key (${(e as Error).message})`, e);
  }
  if (key!.asymmetricKeyType !== "rsa") fail(`key_file ${u.key_file} holds a ${key!.asymmetricKeyType ?? "non-RSA"} key; OPC UA user certificates need RSA`);
  if (!cert!.checkPrivateKey(key!)) fail(`key_file ${u.key_file} does not belong to certificate_file ${u.certificate_file}`);
  return { kind: "certificate", certificate: cert!.raw, subject: cert!.subject.replace(/\n/g, ","), keyPem: key!.export({ format: "pem", type: "pkcs8" }).toString() };
}

/** The private key the certificate store made must stay owner-only, like every key the daemon holds. */
export function checkOwnKey(pkiDir: string): void {
  const key = join(pkiDir, "own", "private", "private_key.pem");
  if (existsSync(key)) readSecretFile(key, "OPC UA client private key");
}
