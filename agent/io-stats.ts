import { readFileSync } from "node:fs";

/**
 * Bytes this process has caused to be written to storage (Linux /proc/self/io `write_bytes`),
 * for SD-card wear accounting; null where the kernel does not provide it.
 */
export function storageBytesWritten(): number | null {
  try {
    const m = /write_bytes:\s*(\d+)/.exec(readFileSync("/proc/self/io", "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
