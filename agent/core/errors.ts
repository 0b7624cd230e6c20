/**
 * The one catalogue of stable error codes. Tests assert `err.code`, never message text.
 * Operators' scripts may match on the code printed by the CLI (`error[CODE]: message`).
 */
export const ErrorCodes = {
  CONFIG_NOT_FOUND: "no config file was found",
  CONFIG_UNREADABLE: "the config file exists but cannot be read by this user",
  WRONG_USER: "the daemon runs as root, but its state directory belongs to the service user",
  CONFIG_PARSE: "the config file is not valid YAML",
  CONFIG_INVALID: "the config does not match the schema",
  CONFIG_KEY_UNKNOWN: "no such config key",
  CONFIG_INCOMPLETE: "a setting needed for this command is missing",
  KEY_PERMISSIONS: "a private key file is readable by group or others",
  KEY_INVALID: "a key file cannot be read or parsed",
  KEY_EXISTS: "refusing to overwrite an existing key or config",
  OUTBOX_OPEN: "the outbox database cannot be opened",
  OUTBOX_CORRUPT: "the outbox failed its integrity check",
  OUTBOX_FULL: "the outbox cannot take a write within buffer.max_bytes (its WAL cannot restart, or one write is larger than the WAL's share)",
  OUTBOX_LOCKED: "another process (a daemon, or a command that opens the outbox itself) holds the outbox",
  OUTBOX_FAILING: "the outbox cannot commit now",
  NOT_DELIVERED: "events were not acknowledged by the SOC in time",
  CONTROL_UNAVAILABLE: "the daemon's control socket does not answer",
  CONTROL_BAD_REQUEST: "the control request is malformed",
  EVENT_INVALID: "an event draft is malformed",
  SEAL_FAILED: "a sealed batch cannot be opened",
  TRUST_INVALID: "a trust file is malformed",
  TRUST_CONFLICT: "a device is already trusted with another key",
  UPSTREAM_REJECTED: "the broker rejected a message",
  BROKER_UNREACHABLE: "the MQTT broker cannot be reached, or its TLS handshake or login failed",
  INPUT_INVALID: "an input file is malformed",
  PATH_UNUSABLE: "a path the operator named cannot be created or written",
  LISTEN_FAILED: "an address given to listen on cannot be bound",
  USAGE: "the command line is malformed",
  // Modbus proxy and policy
  MODBUS_FRAME: "a Modbus frame is malformed",
  POLICY_INVALID: "a policy file is malformed",
  TLS_SETUP: "TLS material cannot be loaded",
  WINDOW_STATE: "the write-window state file cannot be opened or written",
  // OPC UA client
  OPCUA_SETUP: "the OPC UA client's certificate store or trust material cannot be set up",
  OPCUA_PROCESS: "the OPC UA process is not running (starting, restarting after a fault, or stopped)",
  OPCUA_PINNED: "the server's certificate is pinned in the config, so trusting another one cannot take effect",
  // Detection
  SITE_INVALID: "a site file is malformed",
  DETECTOR_STATE: "a detector state snapshot cannot be restored",
  // Updates and releases (firmware-hooks/)
  RELEASE_INVALID: "a release manifest is malformed or missing",
  RELEASE_UNTRUSTED: "a release manifest is not signed by a fleet release key",
  RELEASE_MISMATCH: "a release does not match this device or its files",
  RELEASE_ROLLBACK: "a release is older than the installed one (anti-rollback counter)",
  UPDATE_STATE: "the update state (counter, releases) cannot be read or written",
  HEALTH_FAILED: "the health check after an update failed",
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class DaemonError extends Error {
  override readonly name = "DaemonError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts);
  }
}

export function isDaemonError(e: unknown, code?: ErrorCode): e is DaemonError {
  return e instanceof DaemonError && (code === undefined || e.code === code);
}

/** A one-line, secret-free description of any thrown value. */
export function describeError(e: unknown): string {
  if (e instanceof DaemonError) return `${e.code}: ${e.message}`;
  if (e instanceof Error) return (e as NodeJS.ErrnoException).code ? `${(e as NodeJS.ErrnoException).code}: ${e.message}` : e.message;
  return String(e);
}

const PATH_WHY: Record<string, string> = {
  ENOTDIR: "a part of it is a file, not a directory",
  EISDIR: "it is a directory",
  EACCES: "permission denied",
  EPERM: "not permitted",
  EROFS: "the file system is read-only",
  ENOENT: "this file system does not allow creating it",
  ENOSPC: "the disk is full",
  EDQUOT: "the disk quota is used up",
  EIO: "the storage reports an I/O error",
};

/** PATH_UNUSABLE naming `what` and `path`, with why in words and the system's code. */
export function pathUnusable(path: string, what: string, e: NodeJS.ErrnoException | string): DaemonError {
  const why = typeof e === "string" ? e : ((e.code && PATH_WHY[e.code]) ?? e.message);
  return new DaemonError("PATH_UNUSABLE", `${what} ${path} cannot be used: ${why}${typeof e === "string" ? "" : ` (${e.code ?? "error"})`}`, typeof e === "string" ? undefined : { cause: e });
}
