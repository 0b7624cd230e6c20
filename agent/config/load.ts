import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { LineCounter, parseDocument, type Document } from "yaml";
import { ownershipOf } from "../core/dirs";
import { DaemonError } from "../core/errors";
import { docToJS, formatIssues, zodIssues, type ConfigIssue } from "../core/issues";
import { configSchema, type Config } from "./schema";

export { formatIssues, lineOf, parseYamlFile, type ConfigIssue } from "../core/issues";

export interface LoadedConfig {
  file: string;
  dir: string;
  config: Config;
}

/** Parses YAML text keeping positions; throws CONFIG_PARSE with the line of the first error. */
export function parseConfigText(text: string, file: string): { doc: Document; lc: LineCounter } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const issues = doc.errors.map((e) => ({ path: "", line: lc.linePos(e.pos[0]).line, message: e.message.split("\n")[0] ?? e.message }));
    throw Object.assign(new DaemonError("CONFIG_PARSE", `${file}:${issues[0]?.line}: ${issues[0]?.message}`), { issues });
  }
  return { doc, lc };
}

/**
 * Validates a parsed document; returns the issues, each with the line of its key. A document that
 * does not expand (aliases past the YAML library's limit) is CONFIG_PARSE naming `file`.
 */
export function validateDoc(doc: Document, lc: LineCounter, file: string): { config?: Config; issues: ConfigIssue[] } {
  const raw = docToJS(doc, file, "CONFIG_PARSE") ?? {};
  const r = configSchema.safeParse(raw);
  if (r.success) return { config: r.data, issues: [] };
  return { issues: zodIssues(r.error.issues, doc, lc) };
}

/** Reads, parses and validates a config file, with no other I/O. */
export function loadConfig(file: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw unreadableConfig(file, e as NodeJS.ErrnoException);
  }
  const { doc, lc } = parseConfigText(text, file);
  const { config, issues } = validateDoc(doc, lc, file);
  if (!config) throw Object.assign(new DaemonError("CONFIG_INVALID", formatIssues(file, issues)), { issues });
  return { file, dir: dirname(file), config: resolvePaths(config, dirname(file)) };
}

/**
 * Why the config cannot be read, with what to do: a file that is there but not readable by this
 * user (a `config set` as root used to leave it root:root) is not a missing file, and `init`
 * would not help.
 */
function unreadableConfig(file: string, e: NodeJS.ErrnoException): DaemonError {
  const code = e.code ?? "error";
  if (code === "EACCES" || code === "EPERM") {
    const owner = ownershipOf(file); // undefined: a directory on the way is not searchable
    return new DaemonError("CONFIG_UNREADABLE", `config ${file} cannot be read by uid ${process.getuid?.() ?? "?"} (${code})${owner ? `: it is ${owner}` : ""}; run as root or as a member of its group (the daemon's user must be one: chown root:gatewarden ${file} && chmod 0640 ${file})`);
  }
  if (code === "EISDIR") return new DaemonError("CONFIG_NOT_FOUND", `config ${file} is a directory; pass --config FILE naming the config file in it`);
  return new DaemonError("CONFIG_NOT_FOUND", `cannot read config ${file} (${code}); pass --config FILE, set GATEWARDEN_CONFIG, or run \`gatewarden init --dir DIR\``);
}

/** Makes every path setting absolute, relative to the config file's directory. */
export function resolvePaths(c: Config, dir: string): Config {
  const abs = (p: string | undefined) => (p === undefined ? undefined : isAbsolute(p) ? p : resolve(dir, p));
  return {
    ...c,
    device: { ...c.device, key: abs(c.device.key)! },
    upstream: {
      ...c.upstream,
      ca: abs(c.upstream.ca),
      cert: abs(c.upstream.cert),
      key: abs(c.upstream.key),
      soc_public_key: abs(c.upstream.soc_public_key),
      password_file: abs(c.upstream.password_file),
    },
    buffer: { ...c.buffer, path: abs(c.buffer.path)! },
    control: { socket: abs(c.control.socket)! },
    detection: { ...c.detection, site: abs(c.detection.site), state_path: abs(c.detection.state_path)! },
    ...(c.modbus
      ? {
          modbus: {
            ...c.modbus,
            policy_file: abs(c.modbus.policy_file),
            windows: { ...c.modbus.windows, state_path: abs(c.modbus.windows.state_path)! },
            listeners: c.modbus.listeners.map((l) =>
              l.type === "tls" ? { ...l, tls: { ...l.tls, cert_file: abs(l.tls.cert_file)!, key_file: abs(l.tls.key_file)!, ca_file: abs(l.tls.ca_file)!, crl_file: abs(l.tls.crl_file) } } : l,
            ),
          },
        }
      : {}),
    ...(c.commands ? { commands: { ...c.commands, soc_command_key: abs(c.commands.soc_command_key)!, state_path: abs(c.commands.state_path)! } } : {}),
    ...(c.tamper ? { tamper: { ...c.tamper, inputs: c.tamper.inputs.map((i) => ("file" in i.source ? { ...i, source: { file: abs(i.source.file)! } } : i)) } } : {}),
    ...(c.integrity ? { integrity: { ...c.integrity, manifest_path: abs(c.integrity.manifest_path)!, paths: c.integrity.paths.map((x) => abs(x)!) } } : {}),
    ...(c.update ? { update: { ...c.update, release_keys: c.update.release_keys.map((k) => abs(k)!), state_dir: abs(c.update.state_dir)!, releases_dir: abs(c.update.releases_dir)! } } : {}),
    ...(c.opcua
      ? {
          opcua: {
            ...c.opcua,
            pki_dir: abs(c.opcua.pki_dir)!,
            servers: c.opcua.servers.map((s) => ({ ...s, server_certificate: abs(s.server_certificate), ...(s.user ? { user: "password_file" in s.user ? { ...s.user, password_file: abs(s.user.password_file)! } : { certificate_file: abs(s.user.certificate_file)!, key_file: abs(s.user.key_file)! } } : {}) })),
            ...(c.opcua.front ? { front: { ...c.opcua.front, users_file: abs(c.opcua.front.users_file)! } } : {}),
          },
        }
      : {}),
  };
}
