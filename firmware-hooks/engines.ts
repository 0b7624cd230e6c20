/**
 * The update engines' hook contracts, as documented by each engine:
 *
 * RAUC: bundle hook `install-check` (argv[1]; exit 10 with a message on stderr rejects the
 *   bundle), system.conf handlers `pre-install` / `post-install` (non-zero exit aborts),
 *   slot hook `slot-post-install` (argv[1]); environment RAUC_BUNDLE_MOUNT_POINT (or
 *   RAUC_UPDATE_SOURCE), RAUC_TARGET_SLOTS, RAUC_SLOT_BOOTNAME_<n>. After the reboot,
 *   `rauc status mark-good` commits the booted slot, `rauc status mark-bad` makes the
 *   bootloader fall back.
 * SWUpdate: a shellscript is called with `preinst` and `postinst` (and `postfailure`) as
 *   argv[1]; a non-zero exit fails the update. After the reboot the bootloader variable
 *   `ustate` is set to 0 (STATE_OK) to commit or 3 (STATE_FAILED).
 * Mender: state scripts named after the state, no arguments; exit 0 continues, 1 fails
 *   (an ArtifactReboot_Leave failure makes Mender roll back), 21 asks to retry later.
 *
 * Gatewarden adds `boot` for RAUC and SWUpdate: run once after every boot (systemd unit) to
 * judge a pending update.
 */
export type Action = "verify" | "record" | "health" | "commit" | "rolled_back" | "failed";

export interface EngineSpec {
  stages: Record<string, Action>;
  /** Where the release manifest and files are, from the engine's environment. */
  bundleDir: (env: NodeJS.ProcessEnv) => string | undefined;
  commit?: string[];
  rollback?: string[];
  /** Exit status that rejects at this stage (RAUC's install-check wants 10). */
  rejectCode: (stage: string) => number;
  /** Bundle files the engine rewrites when it builds and signs the bundle (not hashed by Gatewarden). */
  engineFiles?: string[];
}

export const ENGINES: Record<string, EngineSpec> = {
  rauc: {
    stages: { "install-check": "verify", "pre-install": "verify", "slot-post-install": "record", "post-install": "record", boot: "health" },
    bundleDir: (env) => env.RAUC_BUNDLE_MOUNT_POINT || env.RAUC_UPDATE_SOURCE,
    commit: ["rauc", "status", "mark-good"],
    rollback: ["rauc", "status", "mark-bad"],
    rejectCode: (stage) => (stage === "install-check" ? 10 : 1),
    engineFiles: ["manifest.raucm"],
  },
  swupdate: {
    stages: { preinst: "verify", postinst: "record", postfailure: "failed", boot: "health" },
    bundleDir: (env) => env.GATEWARDEN_RELEASE_DIR,
    commit: ["fw_setenv", "ustate", "0"],
    rollback: ["fw_setenv", "ustate", "3"],
    rejectCode: () => 1,
  },
  mender: {
    stages: {
      ArtifactInstall_Enter: "verify",
      ArtifactReboot_Leave: "health",
      ArtifactCommit_Enter: "commit",
      ArtifactRollback_Enter: "rolled_back",
      ArtifactFailure_Enter: "failed",
    },
    bundleDir: (env) => env.GATEWARDEN_RELEASE_DIR,
    rejectCode: () => 1,
  },
};
