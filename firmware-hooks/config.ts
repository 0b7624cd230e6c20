import { z } from "zod";

/**
 * The `update:` section: what this gateway may install and how an update is judged.
 *
 *   update:
 *     device_class: cabinet-pi4          # a release must name this class
 *     release_keys: [keys/release.pub]   # fleet release public keys (Ed25519 PEM)
 *     state_dir: data/update             # anti-rollback counter, pending update
 *     releases_dir: releases             # engine-less installs: versioned folders + `current`
 *     health: { deadline_ms: 60000, require_soc: true }
 */
const command = z.array(z.string().min(1)).min(1);

export const updateSchema = z.strictObject({
  device_class: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "letters, digits, '.', '_' or '-', at most 64"),
  release_keys: z.array(z.string().min(1)).min(1, "name at least one fleet release public key"),
  state_dir: z.string().min(1).default("data/update"),
  releases_dir: z.string().min(1).default("releases"),
  health: z
    .strictObject({
      /** How long the checks after a reboot may take (daemon up, SOC reachable) before the verdict is "failed". */
      deadline_ms: z.number().int().min(100).max(3_600_000).default(60_000),
      /** The SOC must be reachable (upstream connected) for an update to commit. */
      require_soc: z.boolean().default(true),
    })
    .prefault({}),
  /** Overrides of the engine's commit / roll-back commands (argv, no shell). */
  commit_command: command.optional(),
  /** Engine-less updates: restarts the daemon from `releases_dir/current` (e.g. systemctl restart gatewarden). */
  restart_command: command.optional(),
  rollback_command: command.optional(),
});

export type UpdateConfig = z.output<typeof updateSchema>;
