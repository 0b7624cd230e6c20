// `npm run release`: gatewarden-<version>-linux-<arch>.tar.gz for this machine's architecture.
// It holds the bundle, the production node_modules with native addons built here (better-sqlite3,
// serialport, unix-dgram), the update hooks, example configs and policies, the systemd unit and
// install.sh. Native addons are built for this Node major (RELEASE.json says which): build the
// arm64 package on a Pi, or in an arm64 container, with the Node major the gateways run.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { arch } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const outDir = process.argv[2] ?? join(root, "dist");
const name = `gatewarden-${pkg.version}-linux-${arch()}`;
const stage = join(outDir, name);

execFileSync(process.execPath, [join(root, "build", "build.mjs")], { cwd: root, stdio: "inherit" });
rmSync(stage, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });

// The bundle, its source map and the config schema.
mkdirSync(join(stage, "dist"));
for (const f of ["gatewarden.cjs", "gatewarden.cjs.map"]) cpSync(join(root, "dist", f), join(stage, "dist", f));
chmodSync(join(stage, "dist", "gatewarden.cjs"), 0o755);
writeFileSync(join(stage, "gatewarden.schema.json"), execFileSync(process.execPath, [join(root, "dist", "gatewarden.cjs"), "config", "schema"]));

// Production dependencies only, as npm resolved them (their native addons as built here).
const prod = execFileSync("npm", ["ls", "--omit=dev", "--all", "--parseable"], { cwd: root, encoding: "utf8" })
  .split("\n")
  .map((p) => relative(root, p))
  .filter((p) => p.startsWith("node_modules/") && !p.slice("node_modules/".length).includes("node_modules/"));
for (const p of prod) cpSync(join(root, p), join(stage, p), { recursive: true, dereference: false });

// Hooks, packaging, examples, documentation.
const copy = [
  ["build/package/gatewarden.service", "systemd/gatewarden.service"],
  ["build/package/gatewarden-soc-receiver.service", "systemd/gatewarden-soc-receiver.service"],
  ["build/package/install.sh", "install.sh"],
  ["protocols/modbus/examples", "examples/modbus"],
  ["detectors/sites", "examples/sites"],
  ["README.md", "README.md"],
  ["package.json", "package.json"],
];
if (existsSync(join(root, "firmware-hooks"))) copy.push(["firmware-hooks", "firmware-hooks"]);
for (const [from, to] of copy) if (existsSync(join(root, from))) cpSync(join(root, from), join(stage, to), { recursive: true });
// Sources are in the bundle already: only the hook scripts, units and examples travel as files.
const dropSources = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true })) {
    if (e.isDirectory()) dropSources(join(d, e.name));
    else if (e.name.endsWith(".ts")) rmSync(join(d, e.name));
  }
};
for (const d of ["examples", "firmware-hooks"]) if (existsSync(join(stage, d))) dropSources(join(stage, d));
chmodSync(join(stage, "install.sh"), 0o755);

// What it was built for, and a hash of every file (install.sh checks them before switching).
const files = {};
const walk = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.isFile()) files[relative(stage, p)] = createHash("sha256").update(readFileSync(p)).digest("hex");
  }
};
walk(stage);
writeFileSync(
  join(stage, "RELEASE.json"),
  JSON.stringify({ name: "gatewarden", version: pkg.version, platform: "linux", arch: arch(), node_major: Number(process.versions.node.split(".")[0]), node_abi: process.versions.modules, built: new Date().toISOString(), files }, null, 1) + "\n",
);

const tarball = join(outDir, `${name}.tar.gz`);
execFileSync("tar", ["-C", outDir, "-czf", tarball, name]);
rmSync(stage, { recursive: true, force: true });
process.stdout.write(`${tarball} (${(statSync(tarball).size / 1e6).toFixed(1)} MB)\n`);
