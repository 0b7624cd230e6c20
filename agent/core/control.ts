/**
 * What a component needs to offer commands on the daemon's control socket: a place to register
 * a handler by command name. The socket itself (agent/control/) is the agent's; components
 * only see this interface.
 */

/** A handler answers once; a streaming handler calls `push` until `signal` aborts. */
export type ControlHandler = (
  args: Record<string, unknown>,
  ctx: { push(event: unknown): void; signal: AbortSignal },
) => Promise<unknown> | unknown;

/** Registers control commands (`window.open`, `opcua.pki.list`, `maintenance.start`, ...). */
export interface ControlRegistry {
  handle(cmd: string, handler: ControlHandler): void;
}
