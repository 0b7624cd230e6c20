import { describe, expect, it } from "vitest";
import { createPublicKey, generateKeyPairSync, randomBytes } from "node:crypto";
import nacl from "tweetnacl";
import { canonicalize } from "../../../agent/core/canonical";
import { buildSigned, checkEnvelope, GENESIS_HASH, hashEnvelope, type UnsignedEnvelope } from "../../../agent/core/envelope";
import { privateKeyFromSeed, publicKeyFromRaw, rawPublicKey, rawSeed, signBytes, verifyBytes } from "../../../agent/core/sign";
import { BatchOpener, BatchSealer, readHeader } from "../../../agent/events/seal";
import { isDaemonError } from "../../../agent/core/errors";

describe("canonical JSON (RFC 8785)", () => {
  it.each([
    [{ b: 1, a: [3, { d: null, c: "x" }] }, '{"a":[3,{"c":"x","d":null}],"b":1}'],
    [{ "€": 1, a: 2, A: 3 }, '{"A":3,"a":2,"€":1}'],
    [{ n: 1e21, m: 0.1, k: -0, s: "\u2028\n\"" }, '{"k":0,"m":0.1,"n":1e+21,"s":"\u2028\\n\\""}'],
    [{ skip: undefined, keep: true }, '{"keep":true}'],
    [JSON.parse('{"z":[{"__proto__":{"b":1}}],"a":2}'), '{"a":2,"z":[{"__proto__":{"b":1}}]}'],
  ])("%j", (input, expected) => {
    expect(canonicalize(input)).toBe(expected);
  });
  it("rejects values JSON cannot carry", () => {
    expect(() => canonicalize({ x: Number.NaN })).toThrow(TypeError);
    expect(() => canonicalize([undefined])).toThrow(TypeError);
    expect(() => canonicalize({ f: () => 1 })).toThrow(TypeError);
  });
});

describe("Ed25519: node:crypto and tweetnacl are interchangeable", () => {
  it("same seed, same key pair, byte-identical signatures, cross-verification", () => {
    for (let i = 0; i < 5; i++) {
      const seed = randomBytes(32);
      const nodeKey = privateKeyFromSeed(seed);
      const naclPair = nacl.sign.keyPair.fromSeed(seed);
      expect(Buffer.from(naclPair.publicKey)).toEqual(rawPublicKey(nodeKey));
      const msg = randomBytes(32 + i * 50);
      const sNode = signBytes(nodeKey, msg);
      const sNacl = nacl.sign.detached(msg, naclPair.secretKey);
      expect(Buffer.from(sNacl)).toEqual(sNode);
      expect(nacl.sign.detached.verify(msg, sNode, naclPair.publicKey)).toBe(true);
      expect(verifyBytes(publicKeyFromRaw(naclPair.publicKey), msg, sNacl)).toBe(true);
      expect(rawSeed(nodeKey)).toEqual(seed);
    }
  });
});

function unsigned(over: Partial<UnsignedEnvelope> = {}): UnsignedEnvelope {
  return {
    v: 1,
    device: "gw-1",
    boot: 1_800_000_000,
    seq: 7,
    time: 1_795_000_000_123,
    mono: 4242,
    class: "finding",
    severity: 4,
    ocsf: { class_uid: 2004, activity_id: 1, message: "Write denied: \"FC 6\" to 40001", finding_info: { uid: "x", title: "é" } },
    prev: GENESIS_HASH,
    ...over,
  };
}

describe("envelope", () => {
  const { privateKey } = generateKeyPairSync("ed25519");
  const pub = createPublicKey(privateKey);

  it("the composed body is the canonical JSON of the envelope, and the hash covers all but hash and sig", () => {
    const { env, body } = buildSigned(unsigned(), privateKey);
    expect(body).toBe(canonicalize(env));
    expect(env.hash).toBe(hashEnvelope(unsigned()));
    expect(checkEnvelope(JSON.parse(body), pub)).toBe("ok");
  });

  it("detects tampering and the wrong key", () => {
    const { env } = buildSigned(unsigned(), privateKey);
    expect(checkEnvelope({ ...env, seq: 8 }, pub)).toBe("bad_hash");
    expect(checkEnvelope({ ...env, ocsf: { ...env.ocsf, message: "x" } }, pub)).toBe("bad_hash");
    const other = generateKeyPairSync("ed25519");
    expect(checkEnvelope(env, other.publicKey)).toBe("bad_signature");
    const sig = Buffer.from(env.sig, "base64");
    sig[0]! ^= 1;
    expect(checkEnvelope({ ...env, sig: sig.toString("base64") }, pub)).toBe("bad_signature");
    expect(checkEnvelope({ ...env, prev: "zz" }, pub)).toBe("malformed");
    expect(checkEnvelope("nope", pub)).toBe("malformed");
  });
});

describe("sealed batches", () => {
  const soc = nacl.box.keyPair();
  it("round-trip, with a readable routing header and nothing else in clear", () => {
    const sealer = new BatchSealer(soc.publicKey, 2);
    const opener = new BatchOpener(soc.secretKey);
    for (let i = 0; i < 5; i++) {
      const plain = Buffer.from(`[{"secret":"pump setpoint ${i}"}]`);
      const msg = sealer.seal({ device: "gw-1", from: [1, i], to: [1, i], count: 1 }, plain);
      expect(msg.includes(Buffer.from("pump setpoint"))).toBe(false);
      expect(readHeader(msg).header.device).toBe("gw-1");
      expect(opener.open(msg).plaintext).toEqual(plain);
    }
  });
  it("rejects tampered ciphertext, a wrong key and garbage with SEAL_FAILED", () => {
    const msg = new BatchSealer(soc.publicKey).seal({ device: "gw-1", from: [1, 0], to: [1, 0], count: 1 }, Buffer.from("[]"));
    const bad = Buffer.from(msg);
    bad[bad.length - 1]! ^= 0xff;
    const opener = new BatchOpener(soc.secretKey);
    for (const input of [bad, Buffer.from("GWB1\x00\x05{abc}xyz"), Buffer.from("hello"), Buffer.alloc(0)]) {
      try {
        opener.open(input);
        expect.unreachable();
      } catch (e) {
        expect(isDaemonError(e, "SEAL_FAILED")).toBe(true);
      }
    }
    const wrong = new BatchOpener(nacl.box.keyPair().secretKey);
    expect(() => wrong.open(msg)).toThrow(expect.objectContaining({ code: "SEAL_FAILED", message: expect.stringContaining("does not open with this SOC key") }));
  });
});

describe("stored body check", () => {
  const { privateKey } = generateKeyPairSync("ed25519");
  it("accepts an intact body, including nested keys named hash or sig, and rejects any flipped byte outside the signature", async () => {
    const { storedBodyHashOk } = await import("../../../agent/core/envelope");
    const { body } = buildSigned(unsigned({ ocsf: { class_uid: 2004, activity_id: 1, message: 'a "sig":"x", "hash":"y"', unmapped: { sig: "s", hash: "h" } } }), privateKey);
    expect(storedBodyHashOk(Buffer.from(body))).toBe(true);
    const sigAt = body.lastIndexOf('"sig":"');
    for (let i = 0; i < body.length; i++) {
      if (i >= sigAt + 7 && i < sigAt + 7 + 88) continue; // the signature itself: the SOC's check
      const flipped = body.slice(0, i) + String.fromCharCode(body.charCodeAt(i) ^ 1) + body.slice(i + 1);
      expect(storedBodyHashOk(Buffer.from(flipped)), `byte ${i}`).toBe(false);
    }
  });
});

describe("interned values", () => {
  it("canonicalize an interned object exactly like a fresh copy, and freeze it deeply", async () => {
    const { intern } = await import("../../../agent/core/canonical");
    const fresh = { z: 1, a: { y: [1, { b: 2 }], x: "é" } };
    const shared = intern(structuredClone(fresh));
    expect(canonicalize({ m: shared })).toBe(canonicalize({ m: fresh }));
    expect(Object.isFrozen(shared.a)).toBe(true);
  });
});

describe("canonical JSON, property", () => {
  /** The member-by-member reference: sorted keys at every depth, JSON.stringify for leaves. */
  function reference(v: unknown): string {
    if (Array.isArray(v)) return "[" + v.map(reference).join(",") + "]";
    if (typeof v === "object" && v !== null) {
      const o = v as Record<string, unknown>;
      return "{" + Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => JSON.stringify(k) + ":" + reference(o[k])).join(",") + "}";
    }
    return JSON.stringify(v);
  }
  it("matches the member-by-member reference on arbitrary JSON values", async () => {
    const fc = await import("fast-check");
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(canonicalize(v)).toBe(reference(v));
      }),
      { numRuns: 2000 },
    );
  });
});

describe("sealed batches are compressed, and inflation is bounded", () => {
  it("carries several times fewer bytes than the JSON, and a bomb is refused", async () => {
    const { deflateRawSync } = await import("node:zlib");
    const { MAX_BATCH_PLAINTEXT } = await import("../../../agent/events/seal");
    const soc = nacl.box.keyPair();
    const events = Array.from({ length: 200 }, (_, i) => ({ class: "telemetry", seq: i, ocsf: { class_uid: 5001, message: `Reading ${i} of the tank level`, metadata: { product: { name: "Gatewarden" } } } }));
    const plain = Buffer.from(JSON.stringify(events));
    const msg = new BatchSealer(soc.publicKey).seal({ device: "gw-1", from: [1, 0], to: [1, 199], count: 200 }, plain);
    expect(msg.length * 3).toBeLessThan(plain.length);
    expect(new BatchOpener(soc.secretKey).open(msg).plaintext).toEqual(plain);
    // A hostile sender with the SOC's public key seals a deflate bomb.
    const eph = nacl.box.keyPair();
    const nonce = nacl.randomBytes(24);
    const bomb = deflateRawSync(Buffer.alloc(MAX_BATCH_PLAINTEXT + 1024));
    const box = nacl.box(bomb, nonce, soc.publicKey, eph.secretKey);
    const hj = Buffer.from(JSON.stringify({ device: "gw-1", from: [1, 0], to: [1, 0], count: 1, epk: Buffer.from(eph.publicKey).toString("base64"), nonce: Buffer.from(nonce).toString("base64"), z: "deflate-raw" }));
    const len = Buffer.alloc(2);
    len.writeUInt16BE(hj.length);
    expect(() => new BatchOpener(soc.secretKey).open(Buffer.concat([Buffer.from("GWB1"), len, hj, box]))).toThrow(expect.objectContaining({ code: "SEAL_FAILED", message: expect.stringContaining("does not inflate") }));
  });
});
