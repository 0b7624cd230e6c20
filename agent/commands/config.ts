import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { writeFileAtomic } from "../core/secret-files";
import { stringify } from "yaml";
import { getConfigValue, setConfigValue, unsetConfigValue } from "../config/edit";
import { loadConfig, parseConfigText, validateDoc, formatIssues } from "../config/load";
import { locateConfig } from "../config/locate";
import { configJsonSchema, SCHEMA_FILE } from "../config/json-schema";
import { VERSION } from "../version";
import { assertReferences } from "../config/references";
import { takesEffect } from "../reload";
import { DaemonError } from "../core/errors";
import { report } from "./_output";

interface Opts {
  config?: string;
  json?: boolean;
}

export function registerConfig(program: Command): void {
  const cfg = program.command("config").description("Validate, read and change the config file (found by --config, $GATEWARDEN_CONFIG or ./gatewarden.yaml)");
  cfg
    .command("validate")
    .description("Check the config against the schema and every file it names (keys, certificates, policy, site); errors name the file, line and key")
    .option("--config <FILE>", "config file")
    .option("--json", "print the result as JSON")
    .action(
      (opts: Opts) => {
        const file = locateConfig(opts.config);
        let text: string;
        try {
          text = readFileSync(file, "utf8");
        } catch {
          loadConfig(file); // throws the CONFIG_NOT_FOUND error with its advice
          return;
        }
        const { doc, lc } = parseConfigText(text, file);
        const { issues } = validateDoc(doc, lc, file);
        if (issues.length) throw Object.assign(new DaemonError("CONFIG_INVALID", formatIssues(file, issues)), { issues });
        // The same check `run` makes before it starts: what passes here starts there.
        assertReferences(loadConfig(file));
        report(opts.json, { file, valid: true }, () => `${file}: valid`);
      },
    );
  cfg
    .command("get <KEY>")
    .description("Print one key of the effective config (defaults applied), e.g. upstream.url")
    .option("--config <FILE>", "config file")
    .option("--json", "print the value as JSON")
    .action(
      (key: string, opts: Opts) => {
        const { config } = loadConfig(locateConfig(opts.config));
        const v = getConfigValue(config, key);
        report(opts.json, { key, value: v ?? null }, () => (v === undefined ? "" : typeof v === "object" ? stringify(v).trimEnd() : String(v)));
      },
    );
  cfg
    .command("set <KEY> <VALUE>")
    .description("Change one key in place, keeping comments; refuses values the schema rejects")
    .option("--config <FILE>", "config file")
    .option("--json", "print the result as JSON")
    .action(
      (key: string, value: string, opts: Opts) => {
        const file = locateConfig(opts.config);
        loadConfigOrParseErrorOnly(file);
        const r = setConfigValue(file, key, value);
        const when = takesEffect(key);
        report(opts.json, { file, key, previous: r.previous ?? null, value: r.value, takes_effect: when }, () => `${key} = ${JSON.stringify(r.value)} (${r.previous === undefined ? "was unset" : `was ${JSON.stringify(r.previous)}`}); ${when === "reload" ? "a running daemon takes it at `gatewarden reload` (or SIGHUP)" : "takes effect when the daemon restarts"}`);
      },
    );
  cfg
    .command("unset <KEY>")
    .description("Remove one key from the file (its default applies again), keeping comments; refuses to remove a required key")
    .option("--config <FILE>", "config file")
    .option("--json", "print the result as JSON")
    .action(
      (key: string, opts: Opts) => {
        const file = locateConfig(opts.config);
        loadConfigOrParseErrorOnly(file);
        const r = unsetConfigValue(file, key);
        const when = takesEffect(key);
        report(opts.json, { file, key, previous: r.previous ?? null, takes_effect: when }, () =>
          r.previous === undefined ? `${key} was not set in ${file}; nothing changed` : `${key} removed (was ${JSON.stringify(r.previous)}); ${when === "reload" ? "a running daemon takes it at \`gatewarden reload\` (or SIGHUP)" : "takes effect when the daemon restarts"}`,
        );
      },
    );
  cfg
    .command("schema")
    .description("Print the config's JSON Schema (for editors: init puts it beside the config as " + SCHEMA_FILE + ")")
    .option("--out <FILE>", "write it to FILE instead of standard output")
    .action(
      (opts: { out?: string }) => {
        const text = JSON.stringify(configJsonSchema(VERSION), null, 2) + "\n";
        if (opts.out) writeSchemaFile(opts.out, text);
        else process.stdout.write(text);
      },
    );
  cfg
    .command("show")
    .description("Print the effective config (defaults applied, paths resolved)")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (opts: Opts) => {
        const { config, file } = loadConfig(locateConfig(opts.config));
        report(opts.json, config, () => `# ${file} (effective)\n` + stringify(config).trimEnd());
      },
    );
}

/** `set` may repair an invalid file, but it must at least be readable YAML. */
function loadConfigOrParseErrorOnly(file: string): void {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    loadConfig(file);
    return;
  }
  parseConfigText(text, file);
}

/** Writes the schema file whole or not at all (PATH_UNUSABLE naming the path when it cannot). */
export function writeSchemaFile(file: string, text: string): void {
  writeFileAtomic(file, text, 0o644);
}
