import { userInfo } from "node:os";

/**
 * Who is acting, for audit events (write windows, trusted certificates): the OS user running
 * the command, and the user behind sudo when root runs it through sudo. The control socket is
 * owner-only, so the daemon's own user is also who any request came from.
 */
export function osUser(): string {
  let name: string;
  try {
    name = userInfo().username;
  } catch {
    name = `uid ${process.getuid?.() ?? "?"}`;
  }
  const sudo = process.env.SUDO_USER;
  return sudo && name === "root" ? `${sudo} (sudo)` : name;
}
