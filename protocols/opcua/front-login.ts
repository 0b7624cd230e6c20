/**
 * `login_timeout_ms`: how long a connection with an open secure channel may go without an
 * activated session (a logged-in user) on it, counted from its OpenSecureChannel or from the
 * moment its last activated session closed or moved to another channel. node-opcua has no such
 * bound: a channel nobody logs in on stays open for as long as its client renews the token (a
 * node-opcua client does, unasked), or until the token has run out (12.5 min), holding one of
 * the `max_channels` slots. Past it the front closes the connection and reports it
 * through `expired`, like the gate's other refusals before authentication.
 *
 * One timer per channel without an activated session; the channels are those node-opcua has
 * open (at most `max_channels`). A session created but not activated does not count: creating
 * one needs no credentials.
 */

/** What the deadline needs of a node-opcua ServerSecureChannelLayer. */
export interface LoginChannel {
  readonly remoteAddress?: string;
  readonly sessionTokens?: Record<string, { status?: string }>;
  abruptlyInterrupt(): void;
}

interface Watch {
  timer: NodeJS.Timeout | undefined;
}

export class LoginDeadline {
  private readonly open = new Map<LoginChannel, Watch>();

  constructor(
    private readonly timeoutMs: number,
    private readonly expired: (address: string | undefined, reason: string) => void,
  ) {}

  /** A secure channel opened (its OpenSecureChannel answered): its login time starts. */
  opened(channel: LoginChannel): void {
    if (this.open.has(channel)) return;
    this.open.set(channel, { timer: undefined });
    this.check(channel, "its secure channel opened");
  }

  closed(channel: LoginChannel): void {
    clearTimeout(this.open.get(channel)?.timer);
    this.open.delete(channel);
  }

  /** A session was activated (on a channel of its own or one it moved to) or closed: every channel is looked at again. */
  sessionsChanged(): void {
    for (const channel of this.open.keys()) this.check(channel, "its last session closed");
  }

  stop(): void {
    for (const w of this.open.values()) clearTimeout(w.timer);
    this.open.clear();
  }

  private check(channel: LoginChannel, since: string): void {
    const w = this.open.get(channel);
    if (!w) return;
    if (loggedIn(channel)) {
      clearTimeout(w.timer);
      w.timer = undefined;
    } else if (!w.timer) {
      w.timer = setTimeout(() => this.expire(channel, since), this.timeoutMs);
    }
  }

  private expire(channel: LoginChannel, since: string): void {
    const w = this.open.get(channel);
    if (!w) return;
    w.timer = undefined;
    if (loggedIn(channel)) return;
    this.open.delete(channel);
    let address: string | undefined;
    try {
      address = channel.remoteAddress || undefined;
    } catch {
      address = undefined;
    }
    this.expired(address, `no activated session within ${this.timeoutMs} ms after ${since} (opcua.front.limits.login_timeout_ms)`);
    try {
      channel.abruptlyInterrupt();
    } catch {
      // Its transport is gone already: the connection is closed.
    }
  }
}

function loggedIn(channel: LoginChannel): boolean {
  return Object.values(channel.sessionTokens ?? {}).some((s) => s.status === "active");
}
