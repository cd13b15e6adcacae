/**
 * Wire encoding of Raft messages: CBOR (cbor-x) of a fixed positional array, so the network
 * layer can carry messages as opaque bytes. Decoding is strict: every field is type- and
 * range-checked and anything malformed raises a RaftError with code "Decode", because these
 * bytes come from the network.
 */
import { cborDecode, cborEncode } from "../wire/mod.ts";
import {
  type Entry,
  type MembershipConfig,
  type Message,
  MessageType,
  RaftError,
  type SnapshotPiece,
} from "./types.ts";

const VERSION = 1;
/** Upper bound on one encoded message; appends and snapshot pieces are far smaller. */
export const MAX_MESSAGE_BYTES = 64 << 20;
const MAX_ID = 256;
const MAX_MEMBERS = 1024;

/** Encode one message. */
export function encodeMessage(m: Message): Uint8Array {
  return cborEncode([
    VERSION,
    m.type,
    m.from,
    m.to,
    m.term,
    m.logTerm,
    m.index,
    m.commit,
    m.entries.map((e) => [e.index, e.term, e.type, e.data]),
    m.reject,
    m.rejectHint,
    m.context,
    m.snapshot
      ? [
        m.snapshot.meta.index,
        m.snapshot.meta.term,
        m.snapshot.meta.config.voters,
        m.snapshot.meta.config.learners,
        m.snapshot.size,
        m.snapshot.offset,
        m.snapshot.data,
      ]
      : null,
  ]);
}

/** Encode a batch of messages for one peer. */
export function encodeMessages(ms: readonly Message[]): Uint8Array {
  return cborEncode([VERSION, ms.map(encodeMessage)]);
}

/** Decode a batch encoded by {@link encodeMessages}. */
export function decodeMessages(bytes: Uint8Array): Message[] {
  const v = decodeCbor(bytes);
  if (!Array.isArray(v) || v.length !== 2 || v[0] !== VERSION || !Array.isArray(v[1])) {
    fail("batch: expected [version, messages]");
  }
  return (v[1] as unknown[]).map((b, i) => {
    if (!(b instanceof Uint8Array)) fail(`batch: message ${i} is not bytes`);
    return decodeMessage(b as Uint8Array);
  });
}

/** Decode and validate one message. */
export function decodeMessage(bytes: Uint8Array): Message {
  const v = decodeCbor(bytes);
  if (!Array.isArray(v) || v.length !== 13) fail("message: expected a 13-element array");
  const a = v as unknown[];
  if (a[0] !== VERSION) fail(`message: unsupported version ${String(a[0])}`);
  const type = a[1];
  if (typeof type !== "number" || !VALID_TYPES.has(type)) fail(`message: bad type ${String(type)}`);
  const entriesRaw = a[8];
  if (!Array.isArray(entriesRaw)) fail("message: entries must be an array");
  const entries: Entry[] = (entriesRaw as unknown[]).map((e, i) => decodeEntry(e, i));
  if (typeof a[9] !== "boolean") fail("message: reject must be a boolean");
  const context = a[11];
  if (context !== null && !(context instanceof Uint8Array)) fail("message: bad context");
  if (context instanceof Uint8Array && context.length > 4096) fail("message: context too long");
  return {
    type: type as MessageType,
    from: id(a[2], "from"),
    to: id(a[3], "to"),
    term: uint(a[4], "term"),
    logTerm: uint(a[5], "logTerm"),
    index: uint(a[6], "index"),
    commit: uint(a[7], "commit"),
    entries,
    reject: a[9] as boolean,
    rejectHint: uint(a[10], "rejectHint"),
    context: context as Uint8Array | null,
    snapshot: a[12] === null ? null : decodePiece(a[12]),
  };
}

const VALID_TYPES = new Set<number>(Object.values(MessageType));

function decodeCbor(bytes: Uint8Array): unknown {
  if (!(bytes instanceof Uint8Array)) fail("input is not bytes");
  if (bytes.length > MAX_MESSAGE_BYTES) fail(`message of ${bytes.length} bytes exceeds limit`);
  try {
    return cborDecode(bytes);
  } catch (e) {
    fail(`invalid CBOR: ${(e as Error).message}`);
  }
}

function decodeEntry(v: unknown, i: number): Entry {
  if (!Array.isArray(v) || v.length !== 4) fail(`entry ${i}: expected [index, term, type, data]`);
  const a = v as unknown[];
  if (a[2] !== 0 && a[2] !== 1) fail(`entry ${i}: bad type ${String(a[2])}`);
  if (!(a[3] instanceof Uint8Array)) fail(`entry ${i}: data must be bytes`);
  return {
    index: uint(a[0], `entry ${i} index`),
    term: uint(a[1], `entry ${i} term`),
    type: a[2] as 0 | 1,
    data: a[3] as Uint8Array,
  };
}

function decodePiece(v: unknown): SnapshotPiece {
  if (!Array.isArray(v) || v.length !== 7) fail("snapshot: expected a 7-element array");
  const a = v as unknown[];
  const config: MembershipConfig = { voters: ids(a[2], "voters"), learners: ids(a[3], "learners") };
  if (!(a[6] instanceof Uint8Array)) fail("snapshot: data must be bytes");
  const size = uint(a[4], "snapshot size");
  const offset = uint(a[5], "snapshot offset");
  const data = a[6] as Uint8Array;
  if (offset + data.length > size) fail("snapshot: piece extends past the snapshot's size");
  return {
    meta: { index: uint(a[0], "snapshot index"), term: uint(a[1], "snapshot term"), config },
    size,
    offset,
    data,
  };
}

function uint(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    fail(`${what} must be a non-negative integer`);
  }
  return v as number;
}

function id(v: unknown, what: string): string {
  if (typeof v !== "string" || v.length > MAX_ID) fail(`${what} must be a node id string`);
  return v as string;
}

function ids(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.length > MAX_MEMBERS) fail(`snapshot ${what} must be an array`);
  return (v as unknown[]).map((x) => {
    if (typeof x !== "string" || x.length === 0 || x.length > MAX_ID) {
      fail(`snapshot ${what}: bad id`);
    }
    return x as string;
  });
}

function fail(msg: string): never {
  throw new RaftError("Decode", `raft codec: ${msg}`);
}
