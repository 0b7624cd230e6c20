/**
 * Write windows shared by the sources: one store (`gatewarden window`), held by the Modbus
 * proxy when it runs (its policy's roles, its state file) or, for an OPC UA front alone, by the
 * OPC UA source (in memory). Roles with `write_window: required` in either protocol use it; the
 * OPC UA process hears of every change (it decides the front's writes with them).
 */
import type { Config } from "../config/schema";
import type { EventSink } from "../core/events";
import type { ControlRegistry } from "../core/control";
import { frontRoleWrites } from "../../protocols/opcua/front-config";
import { WindowStore, windowClosedDraft, windowOpenedDraft, type WriteWindow } from "../../protocols/modbus/policy/window-store";
import { registerWindowControl } from "../../protocols/modbus/window-control";

/** Roles of the OPC UA front, as a window store asks about them. */
export interface WindowRoles {
  roles: () => readonly string[];
  writes: (role: string) => boolean;
  where: string;
}

export class SharedWindows {
  /** The one store, once a source holds it. */
  store: WindowStore | undefined;
  private readonly watchers: ((open: WriteWindow[]) => void)[] = [];

  constructor(private readonly config: Config) {}

  /** The OPC UA front's roles, when a front is configured. */
  frontRoles(): WindowRoles | undefined {
    const front = this.config.opcua?.front;
    if (!front) return undefined;
    return { roles: () => Object.keys(front.roles), writes: (r) => front.roles[r] !== undefined && frontRoleWrites(front.roles[r]!), where: "opcua.front.roles" };
  }

  /** Told the open windows now and after every change. */
  watch(fn: (open: WriteWindow[]) => void): void {
    this.watchers.push(fn);
    fn(this.store?.snapshot() ?? []);
  }

  changed(open: WriteWindow[]): void {
    for (const w of this.watchers) w(open);
  }

  /** A store for the front's roles alone (no Modbus proxy): in memory, the same events and commands. */
  standalone(roles: WindowRoles, sink: EventSink, control: ControlRegistry): WindowStore {
    const store: WindowStore = new WindowStore({
      roles: () => [...roles.roles()],
      writes: roles.writes,
      rolesIn: roles.where,
      events: {
        opened: (w) => (sink.record(windowOpenedDraft(w, Date.now())), this.changed(store.snapshot())),
        closed: (w, how, by) => (sink.record(windowClosedDraft(w, how, by, Date.now())), this.changed(store.snapshot())),
      },
    });
    this.store = store;
    registerWindowControl(control, () => store);
    return store;
  }
}
