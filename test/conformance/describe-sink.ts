/**
 * Conformance suite every sink must pass (as describeDetector is for detectors, and Vector's
 * sink specs): at-least-once delivery across a reconnect and a restart, commit order, a bounded
 * window of unacknowledged messages while the peer holds its acknowledgements, and nothing sent
 * after `stop`. Each case runs against a real peer over real sockets (the rig says which).
 */
import { describe, expect, it } from "vitest";
import type { Sink } from "../../agent/core/component";
import { until } from "../helpers/fixture";

/** A position in the committed stream: boot epoch and sequence number. */
export interface Position {
  boot: number;
  seq: number;
}

export interface SinkRig {
  sink(): Sink;
  /** Commits `n` events where the sink reads them. */
  produce(n: number): void;
  /** Every position committed so far. */
  committed(): Position[];
  /** Positions the peer has received, first arrivals in arrival order. */
  received(): Position[];
  /** Cuts every connection to the peer and refuses new ones; `restore` lets them in again. */
  outage(): Promise<void>;
  restore(): Promise<void>;
  /** The peer takes messages but does not acknowledge them until `releaseAcks`. */
  holdAcks(): void;
  releaseAcks(): void;
  /** The most messages the peer ever held unacknowledged at once while holding. */
  maxHeld(): number;
  /** The sink's configured window of unacknowledged messages. */
  window: number;
  /** Connections the sink has open to the peer. */
  connections(): number;
  /** Stops everything and starts afresh on the same stored events (a daemon restart). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/**
 * How long a condition may take. Generous on purpose: a condition is waited on, never a timer, so
 * a passing run is as fast as the sink; a machine shared with other work can stretch a window fill
 * from milliseconds to tens of seconds.
 */
const WAIT_MS = 90_000;
const TEST_MS = 4 * WAIT_MS;

const key = (p: Position) => `${p.boot}:${p.seq}`;
const before = (a: Position, b: Position) => a.boot < b.boot || (a.boot === b.boot && a.seq < b.seq);

async function allDelivered(rig: SinkRig, what: string): Promise<void> {
  await until(
    () => {
      const got = new Set(rig.received().map(key));
      return rig.committed().every((p) => got.has(key(p)));
    },
    WAIT_MS,
    what,
  );
}

function expectInOrder(rs: readonly Position[]): void {
  const out = rs.findIndex((p, i) => i > 0 && !before(rs[i - 1]!, p));
  expect(out, out < 0 ? "" : `${key(rs[out]!)} arrived after ${key(rs[out - 1]!)}`).toBe(-1);
}

/** Once the sink is connected, holds the peer's acknowledgements, produces `events` and waits until `held` are held. */
async function holdingAcks(rig: SinkRig, events: number, held: number, what: string): Promise<void> {
  await until(() => rig.connections() > 0, WAIT_MS, "the sink to connect");
  rig.holdAcks();
  rig.produce(events);
  await until(() => rig.maxHeld() >= held, WAIT_MS, what);
}

export function describeSink(name: string, make: () => Promise<SinkRig>): void {
  describe(`sink conformance: ${name}`, () => {
    const withRig = (fn: (rig: SinkRig) => Promise<void>) => async () => {
      const rig = await make();
      try {
        await fn(rig);
      } finally {
        await rig.close();
      }
    };

    it(
      "delivers every committed event at least once across a reconnect, first arrivals in commit order",
      withRig(async (rig) => {
        rig.produce(100);
        await until(() => rig.received().length >= 50, WAIT_MS, "deliveries before the outage");
        await rig.outage();
        rig.produce(300);
        await rig.restore();
        rig.produce(100);
        await allDelivered(rig, "every committed event after the outage");
        expectInOrder(rig.received());
        expect(rig.sink().health()).toMatchObject({ ok: true });
      }),
      TEST_MS,
    );

    it(
      "keeps at most its window unacknowledged while the peer holds acknowledgements, and loses nothing",
      withRig(async (rig) => {
        await holdingAcks(rig, rig.window * 40, rig.window, `the sink to fill its window of ${rig.window}`);
        rig.produce(rig.window * 20); // more while the window is full: queued, not sent
        rig.releaseAcks();
        await allDelivered(rig, "every event once acknowledgements flow again");
        expect(rig.maxHeld()).toBe(rig.window);
        expectInOrder(rig.received());
      }),
      TEST_MS,
    );

    it(
      "stops while the peer holds acknowledgements, and what was in flight is delivered after a restart",
      withRig(async (rig) => {
        await holdingAcks(rig, rig.window * 5, 1, "the sink to send while acknowledgements are held");
        let stopped = false;
        void rig
          .sink()
          .stop()
          .then(() => (stopped = true));
        await until(() => stopped, WAIT_MS, "stop to return while the peer holds its acknowledgements");
        expect(rig.sink().health()).toMatchObject({ ok: false, state: "stopped" });
        rig.releaseAcks();
        await rig.restart();
        rig.produce(10);
        await allDelivered(rig, "what was in flight at the stop, after the restart");
        expectInOrder(rig.received());
      }),
      TEST_MS,
    );

    it(
      "sends nothing after stop, and what it had not sent is delivered after a restart",
      withRig(async (rig) => {
        rig.produce(50);
        await allDelivered(rig, "the first events");
        await rig.sink().stop();
        expect(rig.sink().health()).toMatchObject({ ok: false, state: "stopped" });
        await until(() => rig.connections() === 0, WAIT_MS, "the stopped sink to close its connection");
        const had = rig.received().length;
        rig.produce(80);
        expect(rig.received().length).toBe(had);
        await rig.restart();
        rig.produce(10);
        await allDelivered(rig, "the events committed while the sink was stopped, after the restart");
        expectInOrder(rig.received());
      }),
      TEST_MS,
    );
  });
}
