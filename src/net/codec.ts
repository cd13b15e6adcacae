/**
 * The wire codec of every FileSync protocol: CBOR (cbor-x) checked against a per-message
 * schema (schema.ts), inside length-prefixed frames (frame.ts).
 *
 * Why CBOR and not protobuf: cbor-x is already a dependency (used through src/wire, the
 * project's one CBOR configuration: pure JS, no eval, no native addon) and needs no code
 * generation (protons would add a generate step and generated files to keep in sync); bytes are
 * native, which matters for hashes and chunks; and strictness comes from our schema check,
 * which is stricter than protobuf's (exact arity and types, bounded lengths, no silently
 * ignored unknown fields). Messages are positional arrays `[tag, ...fields]`, so they are as
 * compact as protobuf and there are no map keys to abuse (`__proto__` and friends).
 *
 * Each protocol has its own message set and tag range, so a frame of one protocol fed to
 * another's decoder is an "unknown-type" error rather than a misread.
 */
import { HASH_LENGTH } from "../chunk/hash.ts";
import type { Hash } from "../chunk/hash.ts";
import { cborDecode as wireDecode, cborEncode as wireEncode } from "../wire/mod.ts";
import { WireDecodeError, WireEncodeError } from "./errors.ts";
import { encodeFrame, FRAME_HEADER_LENGTH, type FrameSplitter, type SplitFrame } from "./frame.ts";
import {
  arrayOf,
  bytes,
  fixedBytes,
  MessageSet,
  type MessageSet as MessageSetType,
  text,
  tuple,
  uint,
} from "./schema.ts";

// ---------------------------------------------------------------------------------------------
// CBOR, through the project's one CBOR configuration (src/wire)

/** CBOR-encode a value laid out by a schema (only arrays, ints, text, bytes, booleans). */
function cborEncode(value: unknown): Uint8Array {
  try {
    return wireEncode(value);
  } catch (err) {
    throw new WireEncodeError(`CBOR encoding failed: ${(err as Error)?.message ?? err}`);
  }
}

/** CBOR-decode exactly one item filling all of `bytes`; any failure is a WireDecodeError. */
function cborDecode(bytes: Uint8Array): unknown {
  if (bytes.length === 0) throw new WireDecodeError("malformed", "empty message");
  try {
    return wireDecode(bytes);
  } catch (err) {
    const e = err as { incomplete?: boolean; message?: string } | undefined;
    throw new WireDecodeError(
      e?.incomplete ? "truncated" : "malformed",
      `invalid CBOR: ${String(e?.message ?? err).slice(0, 200)}`,
    );
  }
}

/**
 * A protocol's bulk frames, read without the generic decoder: `decode` builds the message of
 * a payload cut by the splitter, and must give exactly what `ProtocolCodec.decode` gives for
 * the same payload (the splitter only accepts payloads for which it can).
 */
export interface BulkFrames<M> extends FrameSplitter {
  decode(frame: SplitFrame): M;
}

/** A protocol's codec: message set plus frame limit, for both directions. */
export class ProtocolCodec<M extends { type: string }> {
  constructor(
    readonly messages: MessageSetType<M>,
    readonly maxFrame: number,
    readonly bulk?: BulkFrames<M>,
  ) {}

  /** Encode a message to its CBOR payload (no frame header). */
  encode(msg: M): Uint8Array {
    return cborEncode(this.messages.toWire(msg));
  }

  /** Encode a message as one length-prefixed frame. */
  encodeFrame(msg: M): Uint8Array {
    return encodeFrame(this.encode(msg), this.maxFrame);
  }

  /** Decode one frame payload; throws WireDecodeError for anything but a valid message. */
  decode(payload: Uint8Array): M {
    if (payload.length > this.maxFrame) {
      throw new WireDecodeError(
        "frame-too-large",
        `message of ${payload.length} bytes exceeds the limit of ${this.maxFrame}`,
      );
    }
    return this.messages.fromWire(cborDecode(payload));
  }
}

// ---------------------------------------------------------------------------------------------
// Join: /filesync/join/1

/** Version of the join handshake carried in the hello, for clear errors on mismatch. */
export const JOIN_VERSION = 1;
/** Bytes of the nonces each side contributes to the join handshake. */
export const NONCE_LENGTH = 32;
/** Bytes of an HMAC-SHA256 proof. */
export const PROOF_LENGTH = 32;
/** Bytes of an invite id (public; it names the invite, the secret stays secret). */
export const INVITE_ID_LENGTH = 16;
/** Most members listed in a join acceptance. */
export const MAX_MEMBERS = 1024;
/** Most addresses listed per member. */
export const MAX_ADDRS_PER_MEMBER = 16;
/** Longest multiaddr string accepted. */
export const MAX_ADDR_LENGTH = 256;
/** Longest cluster id. */
export const MAX_CLUSTER_ID_LENGTH = 128;
/** Largest opaque payload an acceptance may carry for the daemon. */
export const MAX_JOIN_DATA = 256 * 1024;
/** Frame limit for what a server reads from a (not yet trusted) joiner. */
export const JOIN_REQUEST_MAX_FRAME = 4 * 1024;
/** Frame limit for what a joiner reads from the server (the member list). */
export const JOIN_RESPONSE_MAX_FRAME = 1024 * 1024 + MAX_JOIN_DATA;

/** A member as told to a joiner: who it is and where to reach it. */
export interface MemberInfo {
  peerId: string;
  addrs: string[];
}

/** Messages of /filesync/join/1, in handshake order. */
export type JoinMessage =
  | {
    type: "hello";
    version: number;
    clusterId: string;
    inviteId: Uint8Array;
    nonce: Uint8Array;
  }
  | { type: "challenge"; nonce: Uint8Array; proof: Uint8Array }
  | { type: "proof"; proof: Uint8Array }
  | { type: "accepted"; members: MemberInfo[]; data: Uint8Array }
  | { type: "rejected"; reason: string };

const memberSpec = tuple(
  ["peerId", text(1, 128)],
  ["addrs", arrayOf(text(1, MAX_ADDR_LENGTH), MAX_ADDRS_PER_MEMBER)],
);

const joinMessages = new MessageSet<JoinMessage>("join", [
  {
    tag: 1,
    type: "hello",
    fields: [
      ["version", uint(0xffff)],
      ["clusterId", text(1, MAX_CLUSTER_ID_LENGTH)],
      ["inviteId", fixedBytes(INVITE_ID_LENGTH)],
      ["nonce", fixedBytes(NONCE_LENGTH)],
    ],
  },
  {
    tag: 2,
    type: "challenge",
    fields: [["nonce", fixedBytes(NONCE_LENGTH)], ["proof", fixedBytes(PROOF_LENGTH)]],
  },
  { tag: 3, type: "proof", fields: [["proof", fixedBytes(PROOF_LENGTH)]] },
  {
    tag: 4,
    type: "accepted",
    fields: [["members", arrayOf(memberSpec, MAX_MEMBERS)], ["data", bytes(0, MAX_JOIN_DATA)]],
  },
  { tag: 5, type: "rejected", fields: [["reason", text(0, 512)]] },
]);

/** Codec for what a joiner sends (hello, proof); small frames, read from strangers. */
export const joinRequestCodec = new ProtocolCodec(joinMessages, JOIN_REQUEST_MAX_FRAME);
/** Codec for what a server sends (challenge, accepted, rejected). */
export const joinResponseCodec = new ProtocolCodec(joinMessages, JOIN_RESPONSE_MAX_FRAME);

// ---------------------------------------------------------------------------------------------
// Raft: /filesync/raft/1

/** Most messages in one raft batch. */
export const MAX_RAFT_BATCH = 4096;
/** Frame limit of the raft channel (a batch of opaque raft messages). */
export const RAFT_MAX_FRAME = 16 * 1024 * 1024;

/** Messages of /filesync/raft/1: a batch of opaque, already-encoded raft messages. */
export type RaftMessage = { type: "batch"; msgs: Uint8Array[] };

const raftMessages = new MessageSet<RaftMessage>("raft", [
  { tag: 16, type: "batch", fields: [["msgs", arrayOf(bytes(1, RAFT_MAX_FRAME), MAX_RAFT_BATCH)]] },
]);

/** Codec of /filesync/raft/1. */
export const raftCodec = new ProtocolCodec(raftMessages, RAFT_MAX_FRAME);

// ---------------------------------------------------------------------------------------------
// Objects: /filesync/objects/1

/** Largest object (chunk or Merkle node) carried; chunks are at most 256 KiB by default. */
export const MAX_OBJECT_SIZE = 4 * 1024 * 1024;
/** Most hashes in one `have` query. */
export const MAX_HAVE_HASHES = 4096;
/** Most hashes in one `want` request. */
export const MAX_WANT_HASHES = 1024;
/** Frame limit of the objects protocol: one object plus its envelope. */
export const OBJECTS_MAX_FRAME = MAX_OBJECT_SIZE + 64;

/**
 * Messages of /filesync/objects/1. Requests are answered strictly in order on the same stream:
 *  - pull: `have` by one `haveReply` (bit i set = hash i held), `want` by one `object` or
 *    `missing` per hash, in the order asked;
 *  - push: `store` by one `stored` once the server accepted the object (its count is the
 *    number of objects stored on this stream so far), `flush` by one `flushed` once every
 *    object stored on this stream is durable (count as for `stored`). A server that cannot
 *    take pushed objects (none accepted here, or its store failed) answers `refused` instead,
 *    after which it takes nothing more on that stream.
 * The per-store answers are the pusher's flow control: it keeps a bounded number of bytes
 * unanswered, because the transport's own window does not hold a sender back (objects_push.ts).
 */
export type ObjectsMessage =
  | { type: "have"; hashes: Hash[] }
  | { type: "haveReply"; bits: Uint8Array }
  | { type: "want"; hashes: Hash[] }
  | { type: "object"; hash: Hash; data: Uint8Array }
  | { type: "missing"; hash: Hash }
  | { type: "store"; hash: Hash; data: Uint8Array }
  | { type: "flush" }
  | { type: "flushed"; count: number }
  | { type: "stored"; count: number }
  | { type: "refused"; reason: string };

const OBJECT_TAG = 35;
const STORE_TAG = 37;
/** Longest reason a server gives in `refused`. */
export const MAX_REFUSAL_LENGTH = 512;

const objectsMessages = new MessageSet<ObjectsMessage>("objects", [
  {
    tag: 32,
    type: "have",
    fields: [["hashes", arrayOf(fixedBytes(HASH_LENGTH), MAX_HAVE_HASHES)]],
  },
  { tag: 33, type: "haveReply", fields: [["bits", bytes(0, Math.ceil(MAX_HAVE_HASHES / 8))]] },
  {
    tag: 34,
    type: "want",
    fields: [["hashes", arrayOf(fixedBytes(HASH_LENGTH), MAX_WANT_HASHES)]],
  },
  {
    tag: OBJECT_TAG,
    type: "object",
    fields: [["hash", fixedBytes(HASH_LENGTH)], ["data", bytes(0, MAX_OBJECT_SIZE)]],
  },
  { tag: 36, type: "missing", fields: [["hash", fixedBytes(HASH_LENGTH)]] },
  {
    tag: STORE_TAG,
    type: "store",
    fields: [["hash", fixedBytes(HASH_LENGTH)], ["data", bytes(0, MAX_OBJECT_SIZE)]],
  },
  { tag: 38, type: "flush", fields: [] },
  { tag: 39, type: "flushed", fields: [["count", uint()]] },
  { tag: 40, type: "stored", fields: [["count", uint()]] },
  { tag: 41, type: "refused", fields: [["reason", text(0, MAX_REFUSAL_LENGTH)]] },
]);

/** Payload offset of the hash in an `object` or `store` frame, and of its data's header. */
const DATA_FRAME_HASH_AT = 5;
const DATA_FRAME_DATA_HEADER_AT = DATA_FRAME_HASH_AT + HASH_LENGTH;

/**
 * `object` and `store` frames read without cbor-x: the data comes out in a buffer of its own,
 * copied once from the received chunks (cbor-x copies it out of the frame, which itself is a
 * copy whenever it spans chunks), and the envelope is checked byte by byte. Only the layout
 * the senders write, with any definite length form for the data, is taken here; anything else
 * (even if valid CBOR) goes to the generic decoder, which accepts or rejects it as before.
 */
const objectsBulk: BulkFrames<ObjectsMessage> = {
  headLength: DATA_FRAME_DATA_HEADER_AT + 5,
  minPayload: 1024,
  bodyOffset(head: Uint8Array, length: number): number {
    if (
      head[0] !== 0x83 || head[1] !== 0x18 || (head[2] !== OBJECT_TAG && head[2] !== STORE_TAG) ||
      head[3] !== 0x58 || head[4] !== HASH_LENGTH
    ) {
      return -1;
    }
    const p = DATA_FRAME_DATA_HEADER_AT;
    let offset: number;
    let n: number;
    if (head[p] === 0x58) {
      [offset, n] = [p + 2, head[p + 1]];
    } else if (head[p] === 0x59) {
      [offset, n] = [p + 3, (head[p + 1] << 8) | head[p + 2]];
    } else if (head[p] === 0x5a) {
      n = ((head[p + 1] << 24) | (head[p + 2] << 16) | (head[p + 3] << 8) | head[p + 4]) >>> 0;
      offset = p + 5;
    } else {
      return -1; // short (< 24 bytes: never split anyway), 8-byte or indefinite length
    }
    return n === length - offset && n <= MAX_OBJECT_SIZE ? offset : -1;
  },
  decode({ head, body }: SplitFrame): ObjectsMessage {
    const hash = head.slice(DATA_FRAME_HASH_AT, DATA_FRAME_HASH_AT + HASH_LENGTH);
    return head[2] === OBJECT_TAG
      ? { type: "object", hash, data: body }
      : { type: "store", hash, data: body };
  },
};

/** Codec of /filesync/objects/1. */
export const objectsCodec = new ProtocolCodec(objectsMessages, OBJECTS_MAX_FRAME, objectsBulk);

/**
 * Bytes a frame adds around an object's data: header, array, tag, hash, data header. The same
 * for `object` and `store` frames, which share their layout.
 */
export const OBJECT_FRAME_OVERHEAD = FRAME_HEADER_LENGTH + 1 + 2 + 2 + HASH_LENGTH + 5;

/**
 * The frame of an `object` message, byte for byte what `objectsCodec.encodeFrame` produces,
 * built with a single copy of the data. Bulk transfer is dominated by copies of the payload
 * (the generic path copies it into cbor-x's buffer and again into the frame, ~70 us per
 * 64 KiB here); this is the one hot message, so it gets a hand-laid envelope. A unit test
 * checks it against the generic encoder.
 */
export function encodeObjectFrame(hash: Hash, data: Uint8Array): Uint8Array {
  const head = encodeDataFrameHead(OBJECT_TAG, "object", hash, data, data.length);
  head.set(data, head.length - data.length);
  return head;
}

/**
 * The bytes of an `object` frame that precede its data: the frame is this head followed by
 * `data` unchanged. Lets a sender queue the data buffer itself, without copying it, when the
 * transport will concatenate queued buffers anyway.
 */
export function encodeObjectFrameHeader(hash: Hash, data: Uint8Array): Uint8Array {
  return encodeDataFrameHead(OBJECT_TAG, "object", hash, data, 0);
}

/**
 * The bytes of a `store` frame that precede its data (see encodeObjectFrameHeader): pushing is
 * the other bulk path, so its payload is not copied either.
 */
export function encodeStoreFrameHeader(hash: Hash, data: Uint8Array): Uint8Array {
  return encodeDataFrameHead(STORE_TAG, "store", hash, data, 0);
}

/**
 * The envelope of a `[tag, hash, data]` frame (`object` or `store`), in a buffer with `room`
 * spare bytes at the end. `type` names the message in errors.
 */
function encodeDataFrameHead(
  tag: number,
  type: string,
  hash: Hash,
  data: Uint8Array,
  room: number,
): Uint8Array {
  if (!(hash instanceof Uint8Array) || hash.length !== HASH_LENGTH) {
    throw new WireEncodeError(`${type}.hash must be exactly ${HASH_LENGTH} bytes`);
  }
  if (!(data instanceof Uint8Array) || data.length > MAX_OBJECT_SIZE) {
    throw new WireEncodeError(`${type}.data must be at most ${MAX_OBJECT_SIZE} bytes`);
  }
  const n = data.length;
  // CBOR byte-string header for the data: shortest form, as cbor-x writes it.
  const dataHeader = n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
  const payload = 1 + 2 + 2 + HASH_LENGTH + dataHeader + n;
  const out = new Uint8Array(FRAME_HEADER_LENGTH + payload - n + room);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload);
  let p = FRAME_HEADER_LENGTH;
  out[p++] = 0x83; // array of 3
  out[p++] = 0x18; // uint8 follows (both tags are >= 24)
  out[p++] = tag;
  out[p++] = 0x58; // bytes, uint8 length follows
  out[p++] = HASH_LENGTH;
  out.set(hash, p);
  p += HASH_LENGTH;
  if (dataHeader === 1) {
    out[p++] = 0x40 + n;
  } else if (dataHeader === 2) {
    out[p++] = 0x58;
    out[p++] = n;
  } else if (dataHeader === 3) {
    out[p++] = 0x59;
    view.setUint16(p, n);
    p += 2;
  } else {
    out[p++] = 0x5a;
    view.setUint32(p, n);
    p += 4;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Invites (not a wire protocol, but the same codec: an invite string is a CBOR message)

/** Bytes of an invite secret. */
export const SECRET_LENGTH = 32;
/** Most addresses in an invite. */
export const MAX_INVITE_ADDRS = 32;

/** The payload of an invite string (see invite.ts). */
export type InviteMessage = {
  type: "invite";
  clusterId: string;
  inviteId: Uint8Array;
  secret: Uint8Array;
  /** Unix ms after which the invite is refused; 0 = never. */
  expiresAt: number;
  addrs: string[];
};

const inviteMessages = new MessageSet<InviteMessage>("invite", [
  {
    tag: 64,
    type: "invite",
    fields: [
      ["clusterId", text(1, MAX_CLUSTER_ID_LENGTH)],
      ["inviteId", fixedBytes(INVITE_ID_LENGTH)],
      ["secret", fixedBytes(SECRET_LENGTH)],
      ["expiresAt", uint()],
      ["addrs", arrayOf(text(1, MAX_ADDR_LENGTH), MAX_INVITE_ADDRS)],
    ],
  },
]);

/** Codec of invite payloads. */
export const inviteCodec = new ProtocolCodec(inviteMessages, 16 * 1024);

// ---------------------------------------------------------------------------------------------
// Session: /filesync/session/1

/** Largest request or response body of a session call (a 4 MiB command, a page of records). */
export const SESSION_MAX_BODY = 8 * 1024 * 1024;
/** Longest method name of a session call. */
export const SESSION_MAX_METHOD = 32;

/**
 * Messages of /filesync/session/1: numbered calls with opaque bodies (the daemon encodes what
 * a method takes and gives), answered by a result or a coded error.
 */
export type SessionMessage =
  | { type: "call"; id: number; method: string; body: Uint8Array }
  | { type: "result"; id: number; body: Uint8Array }
  | { type: "error"; id: number; code: string; message: string };

const sessionMessages = new MessageSet<SessionMessage>("session", [
  {
    tag: 48,
    type: "call",
    fields: [
      ["id", uint()],
      ["method", text(1, SESSION_MAX_METHOD)],
      ["body", bytes(0, SESSION_MAX_BODY)],
    ],
  },
  { tag: 49, type: "result", fields: [["id", uint()], ["body", bytes(0, SESSION_MAX_BODY)]] },
  {
    tag: 50,
    type: "error",
    fields: [["id", uint()], ["code", text(0, 32)], ["message", text(0, 1024)]],
  },
]);

/** Codec of /filesync/session/1. */
export const sessionCodec = new ProtocolCodec(sessionMessages, SESSION_MAX_BODY + 1024);

// ---------------------------------------------------------------------------------------------
// Bulk offers: /filesync/bulk/1 (see bulk.ts)

/** Bytes of a bulk ticket. */
export const BULK_TICKET_LENGTH = 32;
/** Longest certificate (PEM) in a bulk offer. */
export const MAX_BULK_CERT = 8 * 1024;

/**
 * Messages of /filesync/bulk/1: a member or client asks how to reach this node's bulk
 * listener, and is told its TCP port, its TLS certificate and a ticket that admits the asker.
 */
export type BulkMessage =
  | { type: "offerRequest"; version: number }
  | { type: "offer"; port: number; cert: string; ticket: Uint8Array }
  | { type: "noOffer"; reason: string };

const bulkMessages = new MessageSet<BulkMessage>("bulk", [
  { tag: 80, type: "offerRequest", fields: [["version", uint(1_000)]] },
  {
    tag: 81,
    type: "offer",
    fields: [
      ["port", uint(65_535)],
      ["cert", text(1, MAX_BULK_CERT)],
      ["ticket", fixedBytes(BULK_TICKET_LENGTH)],
    ],
  },
  { tag: 82, type: "noOffer", fields: [["reason", text(0, 256)]] },
]);

/** Codec of /filesync/bulk/1. */
export const bulkCodec = new ProtocolCodec(bulkMessages, 16 * 1024);
