import type { Config } from "../config/schema";

/** Every private key and secret file a (path-resolved) config names, with the key that names it. */
export function secretFilesOf(c: Config): { key: string; path: string }[] {
  const out: { key: string; path: string }[] = [{ key: "device.key", path: c.device.key }];
  if (c.upstream.key) out.push({ key: "upstream.key", path: c.upstream.key });
  if (c.upstream.password_file) out.push({ key: "upstream.password_file", path: c.upstream.password_file });
  c.modbus?.listeners.forEach((l, i) => {
    if (l.type === "tls") out.push({ key: `modbus.listeners.${i}.tls.key_file`, path: l.tls.key_file });
  });
  c.opcua?.servers.forEach((s, i) => {
    if (!s.user) return;
    // One key for either kind of user, as the config's reference check names it.
    out.push({ key: `opcua.servers.${i}.user`, path: "password_file" in s.user ? s.user.password_file : s.user.key_file });
  });
  return out;
}

/** The file behind a secret's config key, e.g. `upstream.key`. */
export function secretPathOf(c: Config, key: string): string | undefined {
  return secretFilesOf(c).find((s) => s.key === key)?.path;
}
