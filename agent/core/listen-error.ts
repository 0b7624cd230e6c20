import { DaemonError } from "./errors";

const WHY: Record<string, string> = {
  EADDRINUSE: "the address is in use (another process listens there)",
  EADDRNOTAVAIL: "the address is not one of this host's",
  EACCES: "not permitted (ports below 1024 need CAP_NET_BIND_SERVICE)",
  ENOTFOUND: "the host name does not resolve",
};

/** A bind failure as the operator's mistake it is: LISTEN_FAILED naming who and where. */
export function listenError(e: NodeJS.ErrnoException, who: string, where: string): DaemonError {
  const why = (e.code && WHY[e.code]) ?? e.message;
  return new DaemonError("LISTEN_FAILED", `${who} cannot listen on ${where}: ${why} (${e.code ?? "error"})`, { cause: e });
}
