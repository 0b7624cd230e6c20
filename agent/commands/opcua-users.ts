/**
 * `gatewarden opcua users add|remove|list|passwd`: the front's password users, edited in the
 * users file (`opcua.front.users_file`, 0600) without the daemon; the front reads the file at
 * every login. Passwords are read from the terminal (not echoed, asked twice) or, when stdin
 * is not a terminal, from its first line; never from the command line.
 */
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { DaemonError } from "../core/errors";
import type { FrontConfig } from "../../protocols/opcua/front-config";
import { checkPasswordStrength, hashPassword, readUsers, USER_NAME, writeUsers, type FrontUsers } from "../../protocols/opcua/front-users";

export interface UsersCliDeps {
  /** The `opcua.front` section of the config the options name. */
  front: (opts: Record<string, unknown>) => FrontConfig;
  stdout?: (s: string) => void;
  /** The password source (tests); default: the terminal or stdin. */
  readPassword?: (prompt: string) => Promise<string>;
}

export function registerUsersCommands(opcua: Command, deps: UsersCliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const users = opcua.command("users").description("Password users of the OPC UA front (the users file, 0600)");
  const read = deps.readPassword ?? readPassword;

  const named = (name: string) => {
    if (!USER_NAME.test(name)) throw new DaemonError("USAGE", `user name "${name}" must be 1-64 letters, digits, '_', '.', '@' or '-'`);
    return name;
  };
  const newPassword = async (): Promise<string> => {
    const pw = await read("New password: ");
    checkPasswordStrength(pw);
    if (process.stdin.isTTY && !deps.readPassword && (await read("Again: ")) !== pw) throw new DaemonError("USAGE", "the two passwords differ");
    return pw;
  };

  users
    .command("add")
    .description("Add a user with a role; the password is read from the terminal or stdin")
    .argument("<name>", "user name")
    .requiredOption("--role <ROLE>", "a role under opcua.front.roles")
    .option("--config <FILE>", "config file")
    .option("--json", "print JSON")
    .action(async (name: string, o: { role: string; json?: boolean }, cmd: Command) => {
      const front = deps.front(cmd.optsWithGlobals());
      if (!(o.role in front.roles)) throw new DaemonError("USAGE", `no role ${o.role} under opcua.front.roles (roles: ${Object.keys(front.roles).join(", ") || "none"})`);
      const file = readUsers(front.users_file);
      if (file.users[named(name)]) throw new DaemonError("USAGE", `user ${name} exists; use \`gatewarden opcua users passwd ${name}\``);
      file.users[name] = { role: o.role, hash: hashPassword(await newPassword()), changed: new Date().toISOString() };
      writeUsers(front.users_file, file);
      out(o.json ? JSON.stringify({ user: name, role: o.role, file: front.users_file }) + "\n" : `added ${name} (role ${o.role}) to ${front.users_file}\n`);
    });

  // Commands on an existing user: change the file, write it back, say what happened.
  const onUser: { verb: string; description: string; apply: (file: FrontUsers, name: string) => Promise<Record<string, unknown>>; said: (name: string) => string }[] = [
    {
      verb: "passwd",
      description: "Set a user's password (read from the terminal or stdin)",
      apply: async (file, name) => ((file.users[name] = { ...file.users[name]!, hash: hashPassword(await newPassword()), changed: new Date().toISOString() }), { user: name, changed: true }),
      said: (name) => `password of ${name} changed`,
    },
    { verb: "remove", description: "Remove a user", apply: async (file, name) => (delete file.users[name], { user: name, removed: true }), said: (name) => `removed ${name}` },
  ];
  for (const c of onUser) {
    users
      .command(c.verb)
      .description(c.description)
      .argument("<name>", "user name")
      .option("--config <FILE>", "config file")
      .option("--json", "print JSON")
      .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
        const front = deps.front(cmd.optsWithGlobals());
        const file = readUsers(front.users_file);
        if (!file.users[named(name)]) throw new DaemonError("USAGE", `no user ${name} in ${front.users_file}`);
        const result = await c.apply(file, name);
        writeUsers(front.users_file, file);
        out(o.json ? JSON.stringify(result) + "\n" : `${c.said(name)}\n`);
      });
  }

  users
    .command("list")
    .description("List users with their roles (never hashes)")
    .option("--config <FILE>", "config file")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const front = deps.front(cmd.optsWithGlobals());
      const list = Object.entries(readUsers(front.users_file).users).map(([user, u]) => ({ user, role: u.role, changed: u.changed, role_defined: u.role in front.roles }));
      if (o.json) return out(JSON.stringify(list) + "\n");
      if (!list.length) return out(`no users in ${front.users_file}\n`);
      for (const u of list) out(`${u.user}\t${u.role}${u.role_defined ? "" : " (no such role: cannot log in)"}\tchanged ${u.changed}\n`);
    });
}

/** A password from the terminal (not echoed) or the first line of stdin. */
export async function readPassword(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    let text = "";
    for await (const chunk of stdin) {
      text += String(chunk);
      if (text.includes("\n") || text.length > 4096) break;
    }
    return text.split(/\r?\n/)[0] ?? "";
  }
  process.stderr.write(prompt);
  const rl = createInterface({ input: stdin, terminal: true, output: undefined });
  stdin.setRawMode?.(true);
  try {
    return await new Promise<string>((resolve) => rl.once("line", resolve));
  } finally {
    stdin.setRawMode?.(false);
    rl.close();
    process.stderr.write("\n");
  }
}
