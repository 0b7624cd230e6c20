import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Daemon } from "../../helpers/daemon";
import { until } from "../../helpers/fixture";
import { updateSite } from "./_site";

/** A cabinet door switch given as a sysfs-style value file, toggled by the test. */
describe("tamper inputs", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  const site = async (maintenance: string) => {
    const s = await updateSite(cleanups);
    const value = join(s.root, "door-value");
    writeFileSync(value, "0\n");
    appendFileSync(s.site.cfgFile, `tamper:\n  inputs:\n    - { name: cabinet-door, source: { file: ${value} }, debounce_ms: 100, poll_ms: 20 }\n  maintenance: ${maintenance}\n`);
    const daemon = new Daemon(s.site.cfgFile);
    cleanups.push(async () => void (await daemon.stop()));
    const tamper = () => s.lines.filter((l) => !("problem" in l) && /Tamper input/.test((l as unknown as { ocsf: { message: string } }).ocsf.message)) as unknown as { class: string; severity: number; ocsf: { message: string; unmapped: { tamper: { state: string; maintenance: boolean | null } } } }[];
    await until(() => s.lines.length > 0, 20_000, "the boot event");
    return { s, value, tamper };
  };

  it("the door opening outside a maintenance window is a finding; closing is an audit event", async () => {
    const { value, tamper, s } = await site("[]");
    writeFileSync(value, "1\n");
    await until(() => tamper().length >= 1, 20_000, "the open event");
    expect(tamper()[0]).toMatchObject({ class: "finding", severity: 4, ocsf: { message: "Tamper input cabinet-door opened outside a maintenance window", unmapped: { tamper: { state: "open", maintenance: false } } } });
    writeFileSync(value, "0\n");
    await until(() => tamper().length >= 2, 20_000, "the close event");
    expect(tamper()[1]).toMatchObject({ class: "audit", severity: 1, ocsf: { unmapped: { tamper: { state: "closed" } } } });
    expect(s.problems()).toEqual([]);
  });

  it("inside a maintenance window the opening is an audit event", async () => {
    const { value, tamper } = await site('[{ from: "00:00", to: "23:59" }, { from: "23:59", to: "00:00" }]');
    writeFileSync(value, "1\n");
    await until(() => tamper().length >= 1, 20_000, "the open event");
    expect(tamper()[0]).toMatchObject({ class: "audit", severity: 3, ocsf: { message: "Tamper input cabinet-door opened during a maintenance window", unmapped: { tamper: { maintenance: true } } } });
  });
});
