/**
 * Site files shipped with the binary. The offline CLI applies one when every point it names is
 * a column of the input (the C-Town network of the labelled BATADAL data, for instance).
 * `ctown.ts` holds the text of `ctown.yaml`; a unit test keeps the two identical.
 */
import { CTOWN_YAML } from "./ctown";

export const BUNDLED_SITES: Readonly<Record<string, string>> = { ctown: CTOWN_YAML };
