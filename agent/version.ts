/** Replaced at build time by esbuild's `define`; the package version otherwise. */
declare const __GATEWARDEN_VERSION__: string | undefined;
export const VERSION: string = typeof __GATEWARDEN_VERSION__ === "string" ? __GATEWARDEN_VERSION__ : "0.1.0-dev";
