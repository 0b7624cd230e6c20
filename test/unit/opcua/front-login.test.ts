import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LoginDeadline, type LoginChannel } from "../../../protocols/opcua/front-login";

/**
 * The bookkeeping of login_timeout_ms on channels shaped like node-opcua's (its session tokens
 * and their status); the integration test (front.int.test.ts) runs it on real channels.
 */
class Channel implements LoginChannel {
  sessionTokens: Record<string, { status?: string }> = {};
  interrupted = 0;
  constructor(readonly remoteAddress: string) {}
  abruptlyInterrupt(): void {
    this.interrupted += 1;
  }
}

describe("login_timeout_ms", () => {
  let expired: [string | undefined, string][];
  let d: LoginDeadline;
  beforeEach(() => {
    vi.useFakeTimers();
    expired = [];
    d = new LoginDeadline(15_000, (address, reason) => expired.push([address, reason]));
  });
  afterEach(() => {
    d.stop();
    vi.useRealTimers();
  });

  it("closes a channel with no activated session 15 s after it opened; a created, unactivated session does not count", () => {
    const a = new Channel("10.0.0.9");
    d.opened(a);
    a.sessionTokens.t1 = { status: "new" };
    d.sessionsChanged();
    vi.advanceTimersByTime(14_999);
    expect(a.interrupted).toBe(0);
    vi.advanceTimersByTime(1);
    expect(a.interrupted).toBe(1);
    expect(expired).toEqual([["10.0.0.9", "no activated session within 15000 ms after its secure channel opened (opcua.front.limits.login_timeout_ms)"]]);
  });

  it("keeps a channel with an activated session, and closes it 15 s after its last session closed", () => {
    const a = new Channel("10.0.0.9");
    d.opened(a);
    vi.advanceTimersByTime(10_000);
    a.sessionTokens.t1 = { status: "active" };
    a.sessionTokens.t2 = { status: "active" };
    d.sessionsChanged();
    vi.advanceTimersByTime(60_000);
    delete a.sessionTokens.t1;
    d.sessionsChanged();
    vi.advanceTimersByTime(60_000);
    expect(a.interrupted).toBe(0);
    delete a.sessionTokens.t2;
    d.sessionsChanged();
    vi.advanceTimersByTime(15_000);
    expect(a.interrupted).toBe(1);
    expect(expired[0]![1]).toMatch(/after its last session closed/);
  });

  it("a session moved to a new channel: the new one is kept, the old one closed 15 s later", () => {
    const old = new Channel("10.0.0.9");
    const renewed = new Channel("10.0.0.9");
    d.opened(old);
    old.sessionTokens.t1 = { status: "active" };
    d.sessionsChanged();
    d.opened(renewed);
    vi.advanceTimersByTime(5_000);
    delete old.sessionTokens.t1;
    renewed.sessionTokens.t1 = { status: "active" };
    d.sessionsChanged();
    vi.advanceTimersByTime(15_000);
    expect([old.interrupted, renewed.interrupted]).toEqual([1, 0]);
  });

  it("forgets a channel once it closed: no timer, no event", () => {
    const a = new Channel("10.0.0.9");
    d.opened(a);
    d.closed(a);
    vi.advanceTimersByTime(60_000);
    expect([a.interrupted, expired.length, vi.getTimerCount()]).toEqual([0, 0, 0]);
  });
});
