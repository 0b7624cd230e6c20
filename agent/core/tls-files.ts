/** Plain files a command or the config names (certificates, site and policy files), read with a named code. */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { DaemonError, type ErrorCode } from "./errors";

export function readPlain(path: string, what: string, code: ErrorCode): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new DaemonError(code, `${what} ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`);
  }
}

/** TLS_SETUP naming `what` and `path` when the file cannot be read or its (first) certificate does not parse. */
export function readCertificate(path: string, what: string): X509Certificate {
  return certificateOf(readPlain(path, what, "TLS_SETUP"), path, what);
}

/** The file's bytes (a CA bundle as it is), once its first certificate parses (TLS_SETUP otherwise). */
export function readCertificateFile(path: string, what: string): Buffer {
  const bytes = readPlain(path, what, "TLS_SETUP");
  certificateOf(bytes, path, what);
  return bytes;
}

function certificateOf(bytes: Buffer, path: string, what: string): X509Certificate {
  try {
    return new X509Certificate(bytes);
  } catch (e) {
    throw new DaemonError("TLS_SETUP", `${what} ${path} is not a certificate (PEM or DER): ${(e as Error).message}`);
  }
}
