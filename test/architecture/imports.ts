/**
 * The house drawn from its imports: every import of every .ts file (static, type-only,
 * re-exports and dynamic `import()`), resolved to a repository path, and checked against the
 * layering rules. README "Architecture" states the same rules in prose.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import ts from "typescript";

export const SOURCE_ROOTS = ["agent", "protocols", "detectors", "firmware-hooks", "build", "test"] as const;

export interface ImportEdge {
  /** Importing file, relative to the repository root with `/` separators. */
  from: string;
  /** What is imported: a repository path (without extension) for relative imports, else the package name. */
  to: string;
  /** The specifier as written. */
  spec: string;
  line: number;
}

export interface Violation extends ImportEdge {
  rule: string;
}

/** Every `.ts` file under the source roots, as repository-relative paths. */
export function listSources(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(join(root, dir))) {
      if (name === "node_modules" || name.startsWith(".")) continue;
      const rel = `${dir}/${name}`;
      if (statSync(join(root, rel)).isDirectory()) walk(rel);
      else if (name.endsWith(".ts")) out.push(rel);
    }
  };
  for (const r of SOURCE_ROOTS) if (existsSync(join(root, r))) walk(r);
  return out.sort();
}

/** The imports of one file's text. */
export function importsOf(file: string, text: string): ImportEdge[] {
  const info = ts.preProcessFile(text, true, true);
  return info.importedFiles.map((f) => {
    const line = text.slice(0, f.pos).split("\n").length;
    const to = f.fileName.startsWith(".") ? normalize(join(dirname(file), f.fileName)).split("\\").join("/").replace(/\.(ts|js)$/, "") : f.fileName;
    return { from: file, to, spec: f.fileName, line };
  });
}

const under = (path: string, dir: string): boolean => path === dir || path.startsWith(`${dir}/`);

/**
 * The rules. Each returns why an edge is forbidden, or undefined.
 *  - agent/core/ imports nothing else of the repository;
 *  - protocols/, detectors/ and firmware-hooks/ import, of the repository, only themselves and
 *    agent/core/ (so never each other);
 *  - product code and benchmarks (everything but test/) never import test/;
 *  - the command line library is used in agent/commands/ (and the program in agent/cli.ts) only.
 */
export const RULES: Array<(e: ImportEdge) => string | undefined> = [
  (e) => (under(e.from, "agent/core") && isRepoPath(e.to) && !under(e.to, "agent/core") ? "agent/core imports nothing outside agent/core" : undefined),
  (e) => (under(e.from, "protocols") && isRepoPath(e.to) && !under(e.to, "protocols") && !under(e.to, "agent/core") ? "protocols/ imports only protocols/ and agent/core/ (never detectors/ or the rest of agent/)" : undefined),
  (e) => (under(e.from, "detectors") && isRepoPath(e.to) && !under(e.to, "detectors") && !under(e.to, "agent/core") ? "detectors/ imports only detectors/ and agent/core/ (never protocols/ or the rest of agent/)" : undefined),
  (e) => (under(e.from, "firmware-hooks") && isRepoPath(e.to) && !under(e.to, "firmware-hooks") && !under(e.to, "agent/core") ? "firmware-hooks/ imports only firmware-hooks/ and agent/core/ (never protocols/, detectors/ or the rest of agent/)" : undefined),
  (e) => (!under(e.from, "test") && under(e.to, "test") ? "product code and benchmarks never import test/ (helpers included)" : undefined),
  (e) => (e.to === "commander" && !under(e.from, "agent/commands") && e.from !== "agent/cli.ts" && !under(e.from, "test") ? "CLI commands live in agent/commands/" : undefined),
];

function isRepoPath(to: string): boolean {
  return SOURCE_ROOTS.some((r) => under(to, r)) || to === "package.json" || to.startsWith("..");
}

/** Every forbidden edge among the given files (path -> text). */
export function violations(files: ReadonlyMap<string, string>): Violation[] {
  const out: Violation[] = [];
  for (const [file, text] of files) {
    for (const e of importsOf(file, text)) {
      for (const rule of RULES) {
        const why = rule(e);
        if (why) out.push({ ...e, rule: why });
      }
    }
  }
  return out;
}

/** The repository's files, read. */
export function readSources(root: string): Map<string, string> {
  return new Map(listSources(root).map((f) => [f, readFileSync(join(root, f), "utf8")]));
}
