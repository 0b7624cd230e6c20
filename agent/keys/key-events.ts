import type { Envelope } from "../core/envelope";
import { OcsfClass, type EventDraft } from "../core/events";
import { publicKeyFromRaw } from "../core/sign";
import { fingerprint } from "../core/keys";

/**
 * The two events that change a device's key history, as the gateway writes them and the SOC
 * reads them:
 * - a key rotation (`gatewarden keys rotate`): signed by the old key, it carries the new public
 *   key, its fingerprint and `from_seq`, always the next seq: every later event is signed by
 *   the new key;
 * - a farewell (`gatewarden decommission`): the device's last event; the SOC retires it.
 */
export interface RotationBody {
  public_key: string;
  fingerprint: string;
  old_fingerprint: string;
  from_seq: number;
  by: string;
}

export interface FarewellBody {
  by: string;
  fingerprint: string;
  reason: "decommission";
}

export function rotationDraft(r: RotationBody, boot: number): EventDraft {
  return {
    class: "system",
    severity: 2,
    ocsf: {
      class_uid: OcsfClass.DeviceConfigStateChange,
      activity_id: 99,
      message: `Device key rotated by ${r.by}: ${r.old_fingerprint} -> ${r.fingerprint}; the new key signs from seq ${r.from_seq} of boot ${boot}`,
      unmapped: { key_rotation: r },
    },
  };
}

export function farewellDraft(f: FarewellBody, version: string): EventDraft {
  return {
    class: "system",
    severity: 2,
    ocsf: {
      class_uid: OcsfClass.ApplicationLifecycle,
      activity_id: 4, // Stop
      message: `Gatewarden decommissioned by ${f.by}: farewell; its keys, outbox and state are wiped next`,
      app: { name: "Gatewarden", version },
      unmapped: { farewell: f },
    },
  };
}

export interface KeyAnnouncements {
  rotation?: { boot: number; seq: number; from_seq: number; public_key: string; fingerprint: string; old_fingerprint: string };
  farewell?: { by: string | null; fingerprint: string | null };
  /** A rotation body that cannot be followed (why). */
  invalid?: string;
}

/** What a verified event announces about the device's keys (nothing for other events). */
export function keyAnnouncements(e: Envelope): KeyAnnouncements {
  if (e.class !== "system") return {};
  const u = e.ocsf.unmapped as { key_rotation?: Partial<RotationBody>; farewell?: Partial<FarewellBody> } | undefined;
  if (typeof u !== "object" || u === null) return {};
  const out: KeyAnnouncements = {};
  const r = u.key_rotation;
  if (typeof r === "object" && r !== null) {
    const raw = Buffer.from(typeof r.public_key === "string" ? r.public_key : "", "base64");
    // The new key signs from the very next event: an announcement saying otherwise is not followed.
    if (raw.length === 32 && r.from_seq === e.seq + 1) {
      const fp = fingerprint(publicKeyFromRaw(raw));
      if (r.fingerprint === fp) out.rotation = { boot: e.boot, seq: e.seq, from_seq: r.from_seq, public_key: raw.toString("base64"), fingerprint: fp, old_fingerprint: typeof r.old_fingerprint === "string" ? r.old_fingerprint.slice(0, 80) : "?" };
      else out.invalid = "its fingerprint does not match its public key";
    } else out.invalid = raw.length !== 32 ? "its public_key is not 32 bytes, base64" : `its from_seq is not the next seq (${e.seq + 1})`;
  }
  const f = u.farewell;
  if (typeof f === "object" && f !== null) out.farewell = { by: typeof f.by === "string" ? f.by : null, fingerprint: typeof f.fingerprint === "string" ? f.fingerprint.slice(0, 80) : null };
  return out;
}
