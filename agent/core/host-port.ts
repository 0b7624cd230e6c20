import type { z } from "zod";

/** A `host:port` listen or connect address (IPv6 in brackets: `[::1]:502`) split in two. */
export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(":");
  const host = s.slice(0, i).replace(/^\[|\]$/g, "");
  return { host, port: Number(s.slice(i + 1)) };
}

/** HOST:PORT, IPv6 in brackets. */
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/;

/**
 * Why `port` (its digits) is not a usable TCP port, or undefined: 1 to 65535, and 0 too where
 * `listen` (any free port: tools and tests that print or read back the port they got).
 */
export function portProblem(port: string, o: { listen: boolean }): string | undefined {
  const n = /^\d+$/.test(port) ? Number(port) : Number.NaN;
  const min = o.listen ? 0 : 1;
  if (n >= min && n <= 65535) return undefined;
  return `port ${port} is out of range: ${min} to 65535${o.listen ? " (0: any free port)" : ""}`;
}

/** Why `s` is not a usable HOST:PORT address to listen on or connect to, or undefined. */
export function hostPortProblem(s: string, o: { listen: boolean }): string | undefined {
  const m = HOST_PORT.exec(s);
  return m ? portProblem(m[2]!, o) : "expected HOST:PORT";
}

/** For zod's `.superRefine`: the port `re` captures from a URL (when it names one) is 1 to 65535. */
export function urlPortCheck(re: RegExp): (url: string, ctx: z.RefinementCtx) => void {
  return (url, ctx) => {
    const port = re.exec(url)?.[1];
    const problem = port === undefined ? undefined : portProblem(port, { listen: false });
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  };
}
