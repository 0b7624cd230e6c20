// Bundles the daemon/CLI into dist/gatewarden.cjs (runnable with plain `node`) and the
// benchmark runner into dist/bench.cjs. Native addons and the heavy, lazily loaded OPC UA
// stack and MQTT client stay external: they are resolved from node_modules at run time (the
// release carries the production node_modules), and only when a configured part needs them.
import { build } from "esbuild";
import { chmodSync, existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const external = [
  "better-sqlite3",
  "serialport",
  "@serialport/*",
  "node-opcua",
  "node-opcua-*",
  "systeminformation",
  "pino",
  "thread-stream",
  "unix-dgram",
  "mqtt",
];

const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  external,
  sourcemap: "linked",
  logLevel: "warning",
  absWorkingDir: root,
  define: { "import.meta.url": "__import_meta_url", __GATEWARDEN_VERSION__: JSON.stringify(pkg.version) },
  banner: { js: "const __import_meta_url = require('url').pathToFileURL(__filename).href;" },
};

await build({ ...common, entryPoints: ["agent/main.ts"], outfile: "dist/gatewarden.cjs", banner: { js: "#!/usr/bin/env node\n" + common.banner.js } });
chmodSync(join(root, "dist/gatewarden.cjs"), 0o755);
if (existsSync(join(root, "build/bench.ts"))) await build({ ...common, entryPoints: ["build/bench.ts"], outfile: "dist/bench.cjs" });
