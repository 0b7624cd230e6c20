/**
 * A raw OPC UA TCP peer for the front's pre-authentication tests: it writes chunks by hand
 * (a Hello, an OpenSecureChannel with security None, intermediate chunks that never end), as
 * a hostile client would, and reports what the front answered and when it closed.
 */
import { connect, type Socket } from "node:net";
import { BinaryStream, decodeByteString, decodeExpandedNodeId, decodeString, encodeExpandedNodeId, encodeString, OpenSecureChannelResponse, MessageSecurityMode, OpenSecureChannelRequest, SecurityPolicy, SecurityTokenRequestType } from "node-opcua";

/** A Hello for `url` asking for a 64 KiB receive buffer. */
export function hello(url: string): Buffer {
  const u = Buffer.from(url);
  const b = Buffer.alloc(32 + u.length);
  b.write("HELF", 0, "latin1");
  b.writeUInt32LE(b.length, 4);
  b.writeUInt32LE(0, 8); // protocol version
  b.writeUInt32LE(65536, 12); // receive buffer
  b.writeUInt32LE(65536, 16); // send buffer
  b.writeUInt32LE(0, 20); // max message size: no limit
  b.writeUInt32LE(0, 24); // max chunk count: no limit
  b.writeInt32LE(u.length, 28);
  u.copy(b, 32);
  return b;
}

/** An OpenSecureChannel request (security None, no certificate) in one final chunk. */
export function openSecureChannel(requestId = 1): Buffer {
  const body = new BinaryStream(4096);
  body.writeUInt32(0); // secure channel id
  encodeString(SecurityPolicy.None, body);
  body.writeUInt32(0xffffffff); // sender certificate: a null ByteString
  body.writeUInt32(0xffffffff); // receiver certificate thumbprint: null
  body.writeUInt32(requestId); // sequence number
  body.writeUInt32(requestId); // request id
  const req = new OpenSecureChannelRequest({ clientProtocolVersion: 0, requestType: SecurityTokenRequestType.Issue, securityMode: MessageSecurityMode.None, clientNonce: Buffer.alloc(0), requestedLifetime: 60_000 });
  encodeExpandedNodeId(req.schema.encodingDefaultBinary!, body);
  req.encode(body);
  const payload = body.buffer.subarray(0, body.length);
  const head = Buffer.alloc(8);
  head.write("OPNF", 0, "latin1");
  head.writeUInt32LE(8 + payload.length, 4);
  return Buffer.concat([head, payload]);
}

/** The channel and token an OpenSecureChannel response (security None) grants. */
export interface ChannelToken {
  channelId: number;
  tokenId: number;
}

function tokenOf(chunk: Buffer): ChannelToken {
  const st = new BinaryStream(chunk.subarray(12));
  decodeString(st); // security policy
  decodeByteString(st); // sender certificate
  decodeByteString(st); // receiver thumbprint
  st.readUInt32(); // sequence number
  st.readUInt32(); // request id
  decodeExpandedNodeId(st);
  const r = new OpenSecureChannelResponse();
  r.decode(st);
  return { channelId: r.securityToken!.channelId, tokenId: r.securityToken!.tokenId };
}

/**
 * An intermediate ("C") MSG chunk of `size` bytes on an open channel (security None), with
 * its sequence number: a valid piece of a message that is never finished.
 */
export function intermediateChunk(size: number, t: ChannelToken, sequenceNumber: number, requestId = 2): Buffer {
  const b = Buffer.alloc(size);
  b.write("MSGC", 0, "latin1");
  b.writeUInt32LE(size, 4);
  b.writeUInt32LE(t.channelId, 8);
  b.writeUInt32LE(t.tokenId, 12);
  b.writeUInt32LE(sequenceNumber, 16);
  b.writeUInt32LE(requestId, 20);
  return b;
}

export interface RawPeer {
  socket: Socket;
  /** The chunk types the front sent, in order ("ACK", "OPN", "ERR", ...). */
  received: string[];
  /** Resolves when the front (or the peer) closed the connection. */
  closed: Promise<void>;
  isClosed: () => boolean;
  /** The channel and token the front's OpenSecureChannel response gave (undefined before it). */
  token: () => ChannelToken | undefined;
  /** Resolves once a chunk of `type` arrived, or the connection closed first (false). */
  got: (type: string) => Promise<boolean>;
  /** Hello, then (once acknowledged: node-opcua reads nothing after a Hello before its ACK) an OpenSecureChannel; true when the front answered it. */
  openChannel: (url: string) => Promise<boolean>;
}

/** Connects to the front from `localAddress` (another loopback address keeps a flood apart). */
export function rawPeer(port: number, o: { localAddress?: string } = {}): RawPeer {
  const socket = connect({ port, host: "127.0.0.1", ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
  const received: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = Buffer.alloc(0);
  let done = false;
  let token: ChannelToken | undefined;
  socket.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 8 && buf.length >= buf.readUInt32LE(4)) {
      const type = buf.toString("latin1", 0, 3);
      if (type === "OPN") token = tokenOf(buf.subarray(0, buf.readUInt32LE(4)));
      received.push(type);
      buf = buf.subarray(Math.max(8, buf.readUInt32LE(4)));
    }
    for (const w of waiters.splice(0)) w();
  });
  socket.on("error", () => undefined);
  const closed = new Promise<void>((resolve) =>
    socket.on("close", () => {
      done = true;
      for (const w of waiters.splice(0)) w();
      resolve();
    }),
  );
  const got = (type: string) =>
    new Promise<boolean>((resolve) => {
      const check = () => {
        if (received.includes(type)) resolve(true);
        else if (done) resolve(false);
        else waiters.push(check);
      };
      check();
    });
  const openChannel = async (url: string) => {
    socket.write(hello(url));
    if (!(await got("ACK"))) return false;
    socket.write(openSecureChannel());
    return got("OPN");
  };
  return { socket, received, closed, isClosed: () => done, token: () => token, got, openChannel };
}
