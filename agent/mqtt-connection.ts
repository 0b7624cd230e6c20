import type { IClientOptions, MqttClient } from "mqtt";
import { readSecretFile, readTlsKey } from "./core/secret-files";
import { readCertificateFile } from "./core/tls-files";
import { DaemonError } from "./core/errors";

/**
 * TLS material and credentials for a broker connection, as the forwarder and the SOC receiver
 * both need them: CA and client certificate read as given, the private key and the password file
 * only when owner-only (KEY_PERMISSIONS otherwise), the key only when it is one (KEY_INVALID), the
 * CA and certificate only when they are certificates (TLS_SETUP naming `names.ca` / `names.cert`,
 * e.g. "upstream.ca" or "--ca"). Passwords live in files, never in configs.
 */
export function brokerAuth(
  o: { ca?: string; cert?: string; key?: string; username?: string; passwordFile?: string },
  who: string,
  names: { ca: string; cert: string } = { ca: `${who} CA`, cert: `${who} certificate` },
): Pick<IClientOptions, "rejectUnauthorized" | "ca" | "cert" | "key" | "username" | "password"> {
  return {
    rejectUnauthorized: true,
    ca: o.ca ? readCertificateFile(o.ca, names.ca) : undefined,
    cert: o.cert ? readCertificateFile(o.cert, names.cert) : undefined,
    key: o.key ? readTlsKey(o.key, `${who} TLS key`).bytes : undefined,
    username: o.username,
    password: o.passwordFile ? readSecretFile(o.passwordFile, `${who} password file`).toString("utf8").trim() : undefined,
  };
}

/** The broker URLs the gateway and the SOC commands take: MQTT over TCP or over TLS, a host, a port. */
export const BROKER_URL_FORM = "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]";

/** Why `url` is not a broker URL of that form (the scheme, the host, a port 1 to 65535), or undefined. */
export function brokerUrlProblem(url: string): string | undefined {
  if (!/^mqtts?:\/\/[^/\s]+(:\d+)?\/?$/.test(url)) return `must be ${BROKER_URL_FORM}`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `must be ${BROKER_URL_FORM}, with a valid host and a port from 1 to 65535`;
  }
  if (u.port === "0") return "must have a port from 1 to 65535";
  return undefined;
}

/**
 * Why `filter` is not an MQTT topic filter, or undefined: not empty, `+` only as a whole level,
 * `#` only as the whole last level (MQTT 5 section 4.7.1).
 */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter === "") return "must not be empty";
  const levels = filter.split("/");
  for (const [i, l] of levels.entries()) {
    if (l.includes("+") && l !== "+") return `"+" must be a whole level (level ${i + 1} is "${l}")`;
    if (l.includes("#") && (l !== "#" || i !== levels.length - 1)) return `"#" must be the whole last level (level ${i + 1} is "${l}")`;
  }
  return undefined;
}

/**
 * The broker options of a SOC command (`soc receive`, `soc command`), checked before anything is
 * written or sent: USAGE naming --broker or --password-file, TLS_SETUP naming --ca or --cert,
 * KEY_INVALID / KEY_PERMISSIONS for --key and --password-file. What brokerAuth returns.
 */
export function brokerOptionsAuth(o: { broker: string; ca?: string; cert?: string; key?: string; username?: string; passwordFile?: string }): ReturnType<typeof brokerAuth> {
  if (URL_CREDENTIALS.test(o.broker)) throw new DaemonError("USAGE", "--broker must not hold a user name or password: use --username and --password-file (0600)");
  const problem = brokerUrlProblem(o.broker);
  if (problem) throw new DaemonError("USAGE", `--broker ${JSON.stringify(o.broker)} ${problem}`);
  if (o.passwordFile && !o.username) throw new DaemonError("USAGE", "--password-file needs --username: a broker takes a password only with a user name");
  return brokerAuth(o, "broker", { ca: "--ca", cert: "--cert" });
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
