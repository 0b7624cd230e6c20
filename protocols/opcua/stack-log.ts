/**
 * node-opcua's own console output (its warning and error loggers), into the daemon's log at a
 * bounded rate: at the front's connection limit the stack prints a line for every refused
 * connection, so a flood of connections would otherwise write a log line each. At most `lines`
 * lines per `windowMs`; what a window suppressed is said in one line when it ends.
 */
export function boundedStackLog(write: (line: string) => void, o: { lines: number; windowMs: number } = { lines: 20, windowMs: 60_000 }, now: () => number = Date.now): (...args: unknown[]) => void {
  let start = now();
  let written = 0;
  let suppressed = 0;
  let timer: NodeJS.Timeout | undefined;
  const endWindow = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (suppressed) write(`node-opcua: ${suppressed} more line(s) suppressed in ${Math.round(o.windowMs / 1000)} s`);
    start = now();
    written = 0;
    suppressed = 0;
  };
  return (...args) => {
    if (now() - start >= o.windowMs) endWindow();
    if (written < o.lines) {
      written++;
      write(args.map(String).join(" ").slice(0, 500));
      return;
    }
    suppressed++;
    timer ??= setTimeout(endWindow, Math.max(0, start + o.windowMs - now()));
    timer.unref?.();
  };
}
