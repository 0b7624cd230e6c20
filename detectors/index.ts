/** Public surface of local detection, for the daemon, the CLI and the proxy's passive tap. */
export type { Detector, Emit, Finding } from "./detector";
export { DetectionEngine, incidentDraft, type DetectionEngineInit, type EngineSnapshot } from "./engine";
export { engineOptionsSchema, type EngineOptions, type EngineOptionsInput } from "./engine-options";
export { POINT_KINDS, type PointKind } from "./kinds";
export { createSignalDetectors, type SignalSpec } from "./signal-detectors";
export { parseSite, siteSchema, SiteDetector, type SiteConfig } from "./site";
export { runDetect } from "./run";
