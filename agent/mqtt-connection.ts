import { readFileSync } from "node:fs";
import type { IClientOptions, MqttClient } from "mqtt";
import { readSecretFile, readTlsKey } from "./core/secret-files";

/**
 * TLS material and credentials for a broker connection, as the forwarder and the SOC receiver
 * both need them: CA and client certificate read as given, the private key and the password file
 * only when owner-only (KEY_PERMISSIONS otherwise), the key only when it is one (KEY_INVALID). Passwords live in files, never in configs.
 */
export function brokerAuth(
  o: { ca?: string; cert?: string; key?: string; username?: string; passwordFile?: string },
  who: string,
): Pick<IClientOptions, "rejectUnauthorized" | "ca" | "cert" | "key" | "username" | "password"> {
  return {
    rejectUnauthorized: true,
    ca: o.ca ? readFileSync(o.ca) : undefined,
    cert: o.cert ? readFileSync(o.cert) : undefined,
    key: o.key ? readTlsKey(o.key, `${who} TLS key`).bytes : undefined,
    username: o.username,
    password: o.passwordFile ? readSecretFile(o.passwordFile, `${who} password file`).toString("utf8").trim() : undefined,
  };
}

/** A broker URL holding a user name or password (`mqtt://user:secret@host`). */
export const URL_CREDENTIALS = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i;

/**
 * A broker URL as logs, `status` and error messages show it: credentials never leave the
 * process (configs refuse them; this is the second line of defence).
 */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, "$1***@");
}

/**
 * PUBLISH and PUBACK are small writes: Nagle's algorithm with the peer's delayed ACK would stall
 * a window of messages in flight for tens of milliseconds at a time.
 */
export function noDelay(client: MqttClient): void {
  (client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true);
}
