import { resolve } from "node:path";

/** The config file: `--config`, else `$GATEWARDEN_CONFIG`, else `./gatewarden.yaml`. */
export function locateConfig(flag?: string): string {
  return resolve(flag ?? process.env.GATEWARDEN_CONFIG ?? "gatewarden.yaml");
}
