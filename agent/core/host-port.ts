/** A `host:port` listen or connect address (IPv6 in brackets: `[::1]:502`) split in two. */
export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(":");
  const host = s.slice(0, i).replace(/^\[|\]$/g, "");
  return { host, port: Number(s.slice(i + 1)) };
}
