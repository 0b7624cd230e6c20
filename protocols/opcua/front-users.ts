/**
 * The front's password users: one JSON file, owner-only (0600, refused otherwise), holding for
 * each user name a role and a salted scrypt hash of the password (node:crypto; never the
 * password). Written atomically by `gatewarden opcua users add|remove|passwd`; read by the front
 * at every login, so a change takes effect without a restart.
 *
 * Hash format: `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>` (16-byte salt, 32-byte hash).
 */
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { z } from "zod";
import { DaemonError } from "../../agent/core/errors";
import { readSecretFile, writeFileAtomic } from "../../agent/core/secret-files";
import { makeDirs } from "../../agent/core/dirs";

export const USER_NAME = /^[A-Za-z0-9_.@-]{1,64}$/;
/** scrypt cost: 16 MiB and about 50 ms per check on a Raspberry Pi 4. */
const N = 16_384;
const R = 8;
const P = 1;
const MIN_PASSWORD = 8;

const userSchema = z.strictObject({
  role: z.string().min(1),
  hash: z.string().regex(/^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/, "a scrypt hash as `gatewarden opcua users` writes it"),
  changed: z.string(),
});
const fileSchema = z.strictObject({ version: z.literal(1), users: z.record(z.string().regex(USER_NAME), userSchema) });

export type FrontUsers = z.output<typeof fileSchema>;
export type FrontUser = z.output<typeof userSchema>;

/** The users file; a missing file has no users. Loose permissions or bad content: an error naming the file. */
export function readUsers(file: string): FrontUsers {
  if (!existsSync(file)) return { version: 1, users: {} };
  const text = readSecretFile(file, "OPC UA users file").toString("utf8");
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `OPC UA users file ${file} is not valid JSON (${(e as Error).message})`);
  }
  const r = fileSchema.safeParse(obj);
  if (!r.success) throw new DaemonError("INPUT_INVALID", `OPC UA users file ${file}: ${r.error.issues.map((i) => `${i.path.join(".") || "(top level)"}: ${i.message}`).join("; ")}`);
  return r.data;
}

export function writeUsers(file: string, users: FrontUsers): void {
  makeDirs(dirname(file), "OPC UA users file directory");
  writeFileAtomic(file, JSON.stringify(users, null, 2) + "\n", 0o600);
}

export function checkPasswordStrength(password: string): void {
  if (password.length < MIN_PASSWORD) throw new DaemonError("USAGE", `the password must have at least ${MIN_PASSWORD} characters`);
}

export function hashPassword(password: string): string {
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, 32, { N, r: R, p: P, maxmem: 64 * 1024 ** 2 });
  return `scrypt$${N}$${R}$${P}$${salt.toString("base64")}$${hash.toString("base64")}`;
}

/** Checks a password against a stored hash on the thread pool, in constant time. */
export function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [, n, r, p, salt, hash] = stored.split("$");
  const want = Buffer.from(hash ?? "", "base64");
  return new Promise((resolve) => {
    if (!want.length) return resolve(false);
    scrypt(password, Buffer.from(salt ?? "", "base64"), want.length, { N: Number(n), r: Number(r), p: Number(p), maxmem: 256 * 1024 ** 2 }, (err, got) => {
      resolve(!err && got.length === want.length && timingSafeEqual(got, want));
    });
  });
}

/** The user's role when name and password match; undefined otherwise (unknown user or wrong password alike). */
export async function authenticate(file: string, name: string, password: string): Promise<string | undefined> {
  const u = readUsers(file).users[name];
  // An unknown name costs the same scrypt as a known one, so timing does not tell them apart.
  const ok = await verifyPassword(password, u?.hash ?? DUMMY_HASH);
  return ok && u ? u.role : undefined;
}

const DUMMY_HASH = `scrypt$${N}$${R}$${P}$${Buffer.alloc(16).toString("base64")}$${Buffer.alloc(32).toString("base64")}`;
