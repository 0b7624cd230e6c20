import { readFileSync } from "node:fs";
import { join } from "node:path";
import { checkDataPath, checkSocketPath } from "../paths";
import { DaemonError, type ErrorCode } from "../core/errors";
import { readCertificate, readPlain } from "../core/tls-files";
import { readSecretFile, readTlsKey } from "../core/secret-files";
import { loadSocAckPublicKey, loadSocPublicKey } from "../keys/identity";
import { loadDeviceKey } from "../core/keys";
import { parseSite, unknownSiteNames, type SiteConfig } from "../../detectors/site";
import { readPolicyFile } from "../../protocols/modbus/policy/schema";
import { checkOwnKey, loadUserCredentials } from "../../protocols/opcua/user";
import { formatIssues, lineOf, type ConfigIssue } from "../core/issues";
import { parseConfigText, type LoadedConfig } from "./load";

/** An issue with a file the config names; `code` is the error catalogue's. */
export interface ReferenceIssue extends ConfigIssue {
  code: ErrorCode;
}

/** What the checks read and the daemon uses as read (the site file is parsed once). */
export interface References {
  site?: SiteConfig | undefined;
}

/**
 * Everything the config refers to, checked the same way for `run` and `config validate`: every
 * private key and secret file is owner-only and parses (device key, upstream TLS key and
 * password file, Modbus/TCP Security keys, OPC UA user keys and password files, the OPC UA
 * client's own key), every certificate parses (and matches its key), the SOC public key, the
 * Modbus policy file and the site file validate, and every point the site file names is configured; the data files' directories exist, or are one
 * new directory in an existing, writable one. Each issue names the config key and its line;
 * issues inside a policy or site file name that file, its line and its key.
 */
export function checkReferences(loaded: LoadedConfig): ReferenceIssue[] {
  return inspectReferences(loaded).issues;
}

function inspectReferences(loaded: LoadedConfig): References & { issues: ReferenceIssue[] } {
  const c = loaded.config;
  const out: { key: string[]; err: unknown }[] = [];
  const check = <T>(key: (string | number)[], fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (e) {
      out.push({ key: key.map(String), err: e });
      return undefined;
    }
  };
  check(["device", "key"], () => loadDeviceKey(c.device.key));
  const u = c.upstream;
  if (u.url && !u.soc_public_key) check(["upstream", "url"], () => fail("CONFIG_INCOMPLETE", "upstream.url is set but upstream.soc_public_key is not: events are sealed to the SOC's key"));
  if (u.url?.startsWith("mqtts://") && !u.cert !== !u.key) check(["upstream", u.cert ? "cert" : "key"], () => fail("CONFIG_INCOMPLETE", "upstream.cert and upstream.key go together"));
  if (u.soc_public_key) check(["upstream", "soc_public_key"], () => (loadSocPublicKey(u.soc_public_key!), u.url && u.ack === "soc" ? loadSocAckPublicKey(u.soc_public_key!) : undefined));
  if (u.ca) check(["upstream", "ca"], () => readCertificate(u.ca!, "upstream.ca"));
  tlsPair(check, ["upstream"], { cert: u.cert, key: u.key }, "cert", "key", "upstream");
  if (u.password_file) check(["upstream", "password_file"], () => readSecretFile(u.password_file!, "upstream password file"));
  if (c.modbus) {
    const m = c.modbus;
    if (m.policy_file) check(["modbus", "policy_file"], () => readPolicyFile(m.policy_file!));
    m.listeners.forEach((l, i) => {
      if (l.type !== "tls") return;
      const at = ["modbus", "listeners", i, "tls"];
      tlsPair(check, at, { cert: l.tls.cert_file, key: l.tls.key_file }, "cert_file", "key_file", `listener ${l.name}`);
      check([...at, "ca_file"], () => readCertificate(l.tls.ca_file, `listener ${l.name} ca_file`));
      if (l.tls.crl_file) check([...at, "crl_file"], () => readPlain(l.tls.crl_file!, `listener ${l.name} crl_file`, "TLS_SETUP"));
    });
  }
  if (c.opcua) {
    check(["opcua", "pki_dir"], () => checkOwnKey(c.opcua!.pki_dir));
    c.opcua.servers.forEach((s, i) => {
      if (s.server_certificate) check(["opcua", "servers", i, "server_certificate"], () => readCertificate(s.server_certificate!, `opcua server ${s.name} server_certificate`));
      if (s.user) check(["opcua", "servers", i, "user"], () => loadUserCredentials(s));
    });
  }
  const site = c.detection.site ? check(["detection", "site"], () => readSiteFile(c.detection.site!, Object.keys(c.points ?? {}))) : undefined;
  // Data the daemon writes: a mistyped path is refused, not created anywhere.
  check(["buffer", "path"], () => checkDataPath(c.buffer.path, "buffer.path"));
  check(["control", "socket"], () => (checkSocketPath(c.control.socket, "control.socket"), checkDataPath(c.control.socket, "control.socket")));
  if (c.modbus) check(["modbus", "windows", "state_path"], () => checkDataPath(c.modbus!.windows.state_path, "modbus.windows.state_path"));
  if (c.points && Object.keys(c.points).length) check(["detection", "state_path"], () => checkDataPath(c.detection.state_path, "detection.state_path"));
  if (c.opcua) check(["opcua", "pki_dir"], () => checkDataPath(join(c.opcua!.pki_dir, "own"), "opcua.pki_dir", 2));
  if (!out.length) return { issues: [], site };
  // Lines only when something is wrong: the config is parsed again to find them.
  const { doc, lc } = parseConfigText(readFileSync(loaded.file, "utf8"), loaded.file);
  const issues = out.flatMap(({ key, err }): ReferenceIssue[] => {
    const code: ErrorCode = err instanceof DaemonError ? err.code : "INPUT_INVALID";
    const inner = (err as { issues?: ConfigIssue[] }).issues;
    const line = lineOf(doc, lc, key, false);
    // A policy or site file with problems: each names that file, its line and its key.
    if (inner?.length) return inner.map((i) => ({ ...i, file: i.file ?? loaded.file, code, message: `${i.message} (named by ${key.join(".")} at ${loaded.file}${line ? `:${line}` : ""})` }));
    return [{ path: key.join("."), ...(line ? { line } : {}), message: err instanceof DaemonError ? err.message : String((err as Error).message ?? err), code }];
  });
  return { issues, site };
}

/** Throws the first issue's code with every issue listed (what `run` and `config validate` print); else what was read. */
export function assertReferences(loaded: LoadedConfig): References {
  const { issues, site } = inspectReferences(loaded);
  if (!issues.length) return { site };
  throw Object.assign(new DaemonError(issues[0]!.code, formatIssues(loaded.file, issues)), { issues });
}

function fail(code: ErrorCode, message: string): never {
  throw new DaemonError(code, message);
}

/** The site file validates, and every point it names is a configured point (`points`). */
function readSiteFile(path: string, points: string[]): SiteConfig {
  const text = readPlain(path, "site file", "SITE_INVALID").toString("utf8");
  const site = parseSite(text, path);
  const among = points.length ? "among the configured points" : "among the configured points: the config has none, so the site checks have nothing to read";
  const issues = unknownSiteNames(site, text, path, new Set(points), among);
  if (issues.length) throw Object.assign(new DaemonError("SITE_INVALID", formatIssues(path, issues)), { issues });
  return site;
}

type Check = <T>(key: (string | number)[], fn: () => T) => T | undefined;

/** A certificate and its key: both parse, the key is owner-only, and they belong together. */
function tlsPair(check: Check, at: (string | number)[], f: { cert?: string; key?: string }, certKey: string, keyKey: string, who: string): void {
  const cert = f.cert ? check([...at, certKey], () => readCertificate(f.cert!, `${who} certificate`)) : undefined;
  const key = f.key ? check([...at, keyKey], () => readTlsKey(f.key!, `${who} TLS key`)) : undefined;
  if (cert && key && !cert.checkPrivateKey(key.key)) check([...at, keyKey], () => fail("TLS_SETUP", `${who} TLS key ${f.key} does not belong to certificate ${f.cert}`));
}
