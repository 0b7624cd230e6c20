/**
 * OCSF 1.x shaping. Components give `class_uid`, `activity_id`, `message` and class attributes;
 * the recorder adds `category_uid` (class_uid / 1000), `type_uid` (class_uid * 100 + activity_id),
 * `severity_id`, `time` and `metadata`. The mapping of Gatewarden's own events is in README.md.
 */
import { intern } from "../core/canonical";
import type { OcsfDraft, SeverityId } from "../core/events";

export const OCSF_VERSION = "1.3.0";
export const PRODUCT = { name: "Gatewarden", vendor_name: "Gatewarden" } as const;

/** The metadata every event carries: one frozen object per version, canonicalized once. */
const metadataByVersion = new Map<string, Readonly<Record<string, unknown>>>();

function metadata(productVersion: string): Readonly<Record<string, unknown>> {
  let m = metadataByVersion.get(productVersion);
  if (!m) {
    m = intern({ version: OCSF_VERSION, product: { ...PRODUCT, version: productVersion } });
    metadataByVersion.set(productVersion, m);
  }
  return m;
}

export function shapeOcsf(d: OcsfDraft, severity: SeverityId, time: number, productVersion: string): Record<string, unknown> {
  return {
    ...d,
    category_uid: Math.floor(d.class_uid / 1000),
    type_uid: d.class_uid * 100 + d.activity_id,
    severity_id: severity,
    time,
    metadata: metadata(productVersion),
  };
}
