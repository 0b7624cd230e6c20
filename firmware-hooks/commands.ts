import { createPublicKey, randomBytes, type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { z } from "zod";
import { canonicalize } from "../agent/core/canonical";
import { signBytes, verifyBytes } from "../agent/core/sign";
import { DaemonError } from "../agent/core/errors";
import { fingerprint } from "../agent/core/keys";
import { writeDurable } from "./state";

/**
 * Signed SOC commands. A command is bound to one device, carries a random nonce, an issue and
 * an expiry time and a counter that must exceed the last one the device accepted; it is signed
 * (Ed25519 over the RFC 8785 canonical JSON of `command`) with the SOC command key whose public
 * half the gateway's config names (`commands.soc_command_key`).
 *
 *   {"command": {"v":1,"device","counter","nonce","issued","expires","action","args"}, "key": "sha256:…", "sig": "…"}
 */
export const ACTIONS = ["proxy_mode", "block_identity", "unblock_identity", "close_windows", "push_policy", "request_posture", "request_integrity"] as const;
export type Action = (typeof ACTIONS)[number];
export const MODES = ["normal", "read-only", "isolate"] as const;
export type ProxyMode = (typeof MODES)[number];

export const commandsSchema = z.strictObject({
  /** The SOC command public key (Ed25519 PEM, from `gatewarden soc command-key init`). */
  soc_command_key: z.string().min(1),
  /** Accepted counter, recent nonces, proxy mode and blocked identities (fsynced on each change). */
  state_path: z.string().min(1).default("data/commands.json"),
  /** Longest validity a command may claim (expires - issued). */
  max_validity_ms: z.number().int().min(1000).max(86_400_000).default(600_000),
});
export type CommandsConfig = z.output<typeof commandsSchema>;

const commandSchema = z.strictObject({
  v: z.literal(1),
  device: z.string().min(1).max(64),
  counter: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  nonce: z.string().regex(/^[A-Za-z0-9+/]{22}==$/, "16 random bytes, base64"),
  issued: z.number().int().min(0),
  expires: z.number().int().min(0),
  action: z.enum(ACTIONS),
  args: z.record(z.string(), z.unknown()).default({}),
});
export type Command = z.output<typeof commandSchema>;

const signedSchema = z.strictObject({ command: z.unknown(), key: z.string(), sig: z.string() });

export function signCommand(c: Command, key: KeyObject): string {
  return JSON.stringify({ command: c, key: fingerprint(createPublicKey(key)), sig: signBytes(key, Buffer.from(canonicalize(c))).toString("base64") });
}

export function newCommand(o: { device: string; counter: number; action: Action; args?: Record<string, unknown>; validityMs: number; now?: number }): Command {
  const now = o.now ?? Date.now();
  return { v: 1, device: o.device, counter: o.counter, nonce: randomBytes(16).toString("base64"), issued: now, expires: now + o.validityMs, action: o.action, args: o.args ?? {} };
}

/** Why a command is refused; each is reported as a signed finding. */
export type Refusal = "retained" | "malformed" | "unsigned" | "bad_signature" | "foreign_device" | "expired" | "replayed" | "counter_rollback" | "invalid_args";

export class CommandRefused extends Error {
  constructor(
    readonly reason: Refusal,
    message: string,
    readonly command?: Command,
  ) {
    super(message);
  }
}

export interface CommandState {
  counter: number;
  /** Nonces of the last accepted commands (a replay inside their validity is caught by these). */
  nonces: string[];
  mode: ProxyMode;
  blocked: string[];
  /** A policy pushed by the SOC (YAML text), used instead of the configured one. */
  policy: string | null;
}

const MAX_NONCES = 1024;

export class CommandStore {
  state: CommandState;

  constructor(readonly path: string) {
    this.state = { counter: 0, nonces: [], mode: "normal", blocked: [], policy: null };
    if (existsSync(path)) {
      try {
        this.state = { ...this.state, ...(JSON.parse(readFileSync(path, "utf8")) as Partial<CommandState>) };
      } catch (e) {
        // Fail closed: without the counter a replayed old command could not be told apart.
        throw new DaemonError("UPDATE_STATE", `command state ${path} cannot be read (${(e as Error).message}); move it aside only if you accept that old commands could be replayed`);
      }
    }
  }

  save(): void {
    writeDurable(this.path, JSON.stringify(this.state) + "\n");
  }
}

/**
 * Checks a received command, in this order: retained, malformed, signature (unsigned when no
 * configured key signed it, bad_signature when it does not verify), device binding, expiry,
 * nonce replay, counter. Accepting persists counter and nonce before the command takes effect.
 */
export function admit(payload: Buffer, o: { retained: boolean; device: string; key: KeyObject; store: CommandStore; maxValidityMs: number; now?: number }): Command {
  const now = o.now ?? Date.now();
  if (o.retained) throw new CommandRefused("retained", "a retained command is refused (it could be an old one the broker kept)");
  let outer: z.output<typeof signedSchema>;
  try {
    outer = signedSchema.parse(JSON.parse(payload.toString("utf8")));
  } catch {
    throw new CommandRefused("malformed", "the command is not a signed command object");
  }
  const parsed = commandSchema.safeParse(outer.command);
  if (!parsed.success) throw new CommandRefused("malformed", `command: ${parsed.error.issues[0]!.path.join(".")}: ${parsed.error.issues[0]!.message}`);
  const c = parsed.data;
  if (outer.key !== fingerprint(o.key)) throw new CommandRefused("unsigned", `not signed by the SOC command key (signed by ${outer.key.slice(0, 80)})`, c);
  if (!verifyBytes(o.key, Buffer.from(canonicalize(outer.command)), Buffer.from(outer.sig, "base64"))) throw new CommandRefused("bad_signature", "the signature does not verify", c);
  if (c.device !== o.device) throw new CommandRefused("foreign_device", `the command is for device ${c.device}`, c);
  if (now >= c.expires || c.expires - c.issued > o.maxValidityMs || c.issued > now + 60_000) throw new CommandRefused("expired", `valid ${new Date(c.issued).toISOString()} .. ${new Date(c.expires).toISOString()}, now ${new Date(now).toISOString()}`, c);
  const s = o.store.state;
  if (s.nonces.includes(c.nonce)) throw new CommandRefused("replayed", `nonce ${c.nonce} was already used`, c);
  if (c.counter <= s.counter) throw new CommandRefused("counter_rollback", `counter ${c.counter} is not above the last accepted ${s.counter}`, c);
  s.counter = c.counter;
  s.nonces = [...s.nonces, c.nonce].slice(-MAX_NONCES);
  o.store.save();
  return c;
}

export function loadCommandKey(path: string): KeyObject {
  try {
    const k = createPublicKey(readFileSync(path));
    if (k.asymmetricKeyType !== "ed25519") throw new Error(`a ${k.asymmetricKeyType} key`);
    return k;
  } catch (e) {
    throw new DaemonError("KEY_INVALID", `commands.soc_command_key: ${path} is not an Ed25519 PEM public key (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}
