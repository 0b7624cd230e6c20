import type { Recorder } from "../events/recorder";
import type { Outbox } from "./store";

/**
 * The stored size of every row committed from now on (the `bytes` column: the signed envelope
 * as committed): the yardstick SD-card wear per event is measured against (`npm run bench --
 * wear` and its unit test).
 */
export function rowSizes(outbox: Outbox, recorder: Pick<Recorder, "onCommit">): { rows(): number; mean(): number; stop(): void } {
  let rows = 0;
  let bytes = 0;
  const stop = recorder.onCommit((_envs, ids) => {
    if (!ids.length) return;
    for (const r of outbox.readAfter(ids[0]! - 1, ids.length)) bytes += r.bytes;
    rows += ids.length;
  });
  return { rows: () => rows, mean: () => (rows ? bytes / rows : 0), stop };
}
