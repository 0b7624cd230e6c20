import type { Socket } from "node:net";

/** Buffer sizes the front accepts in a Hello, as its ACK will grant them. */
export const FRONT_MIN_BUFFER = 8192;
export const FRONT_MAX_BUFFER = 64 * 1024;
/** Before the Hello is answered node-opcua reads at most 4 KiB per chunk. */
const PRE_HELLO_CHUNK = 4096;

const clamp = (v: number) => Math.min(FRONT_MAX_BUFFER, Math.max(FRONT_MIN_BUFFER, v || FRONT_MAX_BUFFER));

/** The receive buffer the front grants for a Hello's (the same rule as its transport limits). */
export function grantedReceiveBuffer(helloReceiveBufferSize: number): number {
  return clamp(helloReceiveBufferSize);
}

/** What one message may take: its chunks and their bytes (`opcua.front.limits`). */
export interface MessageLimits {
  maxChunkCount: number;
  maxMessageBytes: number;
}

const NO_MESSAGE_LIMITS: MessageLimits = { maxChunkCount: Infinity, maxMessageBytes: Infinity };

/**
 * Checks OPC UA TCP chunk headers (type, chunk flag, little-endian size) before node-opcua
 * sees a byte, and refuses a connection whose first chunk is not a Hello of at most 4 KiB, or
 * any chunk larger than the receive buffer the Hello obtained, or smaller than its header, or
 * a message (intermediate chunks up to a final or abort one) of more chunks or bytes than
 * `limits` allow: chunks that never end are cut off before they are reassembled.
 * node-opcua 2.182 throws an uncaught exception for an oversized chunk, which would stop the
 * whole daemon: unauthenticated input must never get that far. Pure and incremental: feed it
 * the bytes as they arrive; it returns the reason to refuse, or undefined. `onOpen` is asked
 * at each OpenSecureChannel chunk (a pre-authentication request) and may refuse it.
 */
export class ChunkGuard {
  private header = Buffer.alloc(20);
  private have = 0;
  private skip = 0;
  private limit = PRE_HELLO_CHUNK;
  private first = true;
  private chunks = 0;
  private bytes = 0;

  constructor(
    private readonly limits: MessageLimits = NO_MESSAGE_LIMITS,
    private readonly onOpen?: () => string | undefined,
  ) {}

  feed(b: Buffer): string | undefined {
    let off = 0;
    while (off < b.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, b.length - off);
        this.skip -= n;
        off += n;
        continue;
      }
      // A Hello's buffer sizes sit in its first 20 bytes; other chunks need only 8.
      const need = this.first ? 20 : 8;
      const n = Math.min(need - this.have, b.length - off);
      b.copy(this.header, this.have, off, off + n);
      this.have += n;
      off += n;
      // The first 8 bytes already tell a stranger (HTTP, TLS, garbage) from a Hello.
      if (this.first && this.have >= 8 && this.header.toString("latin1", 0, 3) !== "HEL") return `the first chunk is ${JSON.stringify(this.header.toString("latin1", 0, 3))}, not a Hello`;
      if (this.have < need) return undefined;
      const type = this.header.toString("latin1", 0, 3);
      const size = this.header.readUInt32LE(4);
      if (this.first) {
        if (type !== "HEL") return `the first chunk is ${JSON.stringify(type)}, not a Hello`;
        if (size > PRE_HELLO_CHUNK) return `a Hello of ${size} bytes (at most ${PRE_HELLO_CHUNK})`;
        this.limit = grantedReceiveBuffer(this.header.readUInt32LE(12));
        this.first = false;
      } else if (size > this.limit) return `a ${type} chunk of ${size} bytes, above the ${this.limit}-byte receive buffer`;
      if (size < need) return `a ${type} chunk of ${size} bytes, shorter than its header`;
      const why = this.count(type, String.fromCharCode(this.header[3]!), size);
      if (why !== undefined) return why;
      this.skip = size - need;
      this.have = 0;
    }
    return undefined;
  }

  /** One more chunk of the current message: "C" continues it, "F" ends it, "A" aborts it. */
  private count(type: string, flag: string, size: number): string | undefined {
    if (type === "OPN" && this.onOpen) {
      const why = this.onOpen();
      if (why !== undefined) return why;
    }
    if (type !== "MSG" && type !== "OPN" && type !== "CLO") return undefined;
    this.chunks += 1;
    this.bytes += size;
    const { maxChunkCount, maxMessageBytes } = this.limits;
    if (this.chunks > maxChunkCount) return `a ${type} message of more than ${maxChunkCount} chunks (opcua.front.limits.max_chunk_count)`;
    if (this.bytes > maxMessageBytes) return `a ${type} message of more than ${maxMessageBytes} bytes (opcua.front.limits.max_message_bytes)`;
    if (flag !== "C") {
      this.chunks = 0;
      this.bytes = 0;
    }
    return undefined;
  }
}

/**
 * Puts a ChunkGuard in front of every 'data' event of a socket node-opcua is about to serve:
 * a refused chunk closes the socket and never reaches node-opcua's listeners.
 */
export function guardSocket(socket: Socket, onRefuse: (reason: string) => void, guard = new ChunkGuard()): void {
  const emit = socket.emit.bind(socket);
  let refused = false;
  socket.emit = ((event: string | symbol, ...args: unknown[]): boolean => {
    if (event === "data" && !refused) {
      const reason = guard.feed(args[0] as Buffer);
      if (reason !== undefined) {
        refused = true;
        onRefuse(reason);
        socket.destroy();
        return false;
      }
    } else if (event === "data") return false;
    return emit(event, ...args);
  }) as Socket["emit"];
}

/**
 * Calls `opened` once, when the server writes its OpenSecureChannel response on `socket` (a
 * chunk header is never encrypted, so its type shows even on a SignAndEncrypt channel).
 */
export function onChannelOpened(socket: Socket, opened: () => void): void {
  const write = socket.write;
  socket.write = function (this: Socket, chunk: unknown, ...rest: unknown[]): boolean {
    if (Buffer.isBuffer(chunk) && chunk.length >= 3 && chunk.toString("latin1", 0, 3) === "OPN") {
      socket.write = write;
      opened();
    }
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as Socket["write"];
}
