/**
 * Encoding of file index commands (Raft entry payloads) and snapshots: CBOR (cbor-x) of
 * positional arrays, decoded strictly. A command comes from a peer, so anything malformed,
 * oversized or unknown is a CommandDecodeError, never a crash or a half-read command.
 *
 * Command: [1, origin, ops] or [1, origin, ops, time]; the optional 4th element is the commit
 * time (unix ms) so commands from older nodes still decode (as time 0).
 *
 * A batch too large for one command (MAX_COMMAND_BYTES) travels as staged parts:
 * [10, batch, part, [fileOp...]] entries, then one [11, batch, parts] that applies them all as
 * one command. A staged part's file ops are kept in the index as encodeFileOps bytes.
 *
 * Snapshot v2 adds history, commit times and labels to v1; v1 still decodes (no history). Its
 * optional 9th element is the history horizon, its optional 10th the staged batches (written
 * only when there are any, so a snapshot without them stays readable by older nodes).
 */
import { cborDecode, cborEncode } from "../wire/mod.ts";
import { HASH_LENGTH } from "../chunk/mod.ts";
import type { Command, FileKind, FileOp, IndexRecord, Op } from "./types.ts";

const COMMAND_VERSION = 1;
const SNAPSHOT_VERSION = 2;
/** Largest encoded command accepted (tens of thousands of ops of typical paths fit). */
export const MAX_COMMAND_BYTES = 4 * 1024 * 1024;
const MAX_STRING = 4096;
/** Most file ops in one staged part. */
export const MAX_STAGE_OPS = 50_000;
/** Highest part number of a staged batch (parts are numbered from 0). */
export const MAX_STAGE_PART = 99_999;
/** Most parts one commit-batch names. */
export const MAX_BATCH_PARTS = 100_000;
const BATCH_ID = /^[0-9a-z-]{8,64}$/;

/** A command or snapshot that does not decode. */
export class CommandDecodeError extends Error {
  override name = "CommandDecodeError";
}

const OP_TAGS = {
  put: 1,
  mkdir: 2,
  delete: 3,
  rename: 4,
  peer: 5,
  "use-invite": 6,
  label: 7,
  unlabel: 8,
  prune: 9,
  stage: 10,
  "commit-batch": 11,
} as const;
/** Longest label name, in characters (UTF-16 units). */
export const MAX_LABEL_CHARS = 128;
/** Most addresses recorded for one member. */
const MAX_PEER_ADDRS = 16;
const KINDS: readonly FileKind[] = ["file", "dir", "symlink"];

function plain(b: Uint8Array): Uint8Array {
  return b.constructor === Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function opToWire(op: Op): unknown[] {
  switch (op.op) {
    case "put":
      return [
        OP_TAGS.put,
        op.path,
        op.base,
        KINDS.indexOf(op.kind),
        plain(op.root),
        op.size,
        op.mode,
        op.mtime,
        op.target ?? "",
      ];
    case "mkdir":
      return [OP_TAGS.mkdir, op.path, op.base, op.mode, op.mtime];
    case "delete":
      return [OP_TAGS.delete, op.path, op.base];
    case "rename":
      return [OP_TAGS.rename, op.from, op.fromBase, op.to, op.toBase];
    case "peer":
      return [OP_TAGS.peer, op.peerId, op.addrs];
    case "use-invite":
      return [OP_TAGS["use-invite"], op.inviteId];
    case "label":
      return [OP_TAGS.label, op.name, op.version];
    case "unlabel":
      return [OP_TAGS.unlabel, op.name];
    case "prune":
      return [OP_TAGS.prune, op.keepVersions, op.keepMs, op.now];
    case "stage":
      return [OP_TAGS.stage, op.batch, op.part, op.ops.map(opToWire)];
    case "commit-batch":
      return [OP_TAGS["commit-batch"], op.batch, op.parts];
  }
}

/** Whether `id` is an acceptable batch id: 8..64 characters of [0-9a-z-]. */
export function isBatchId(id: unknown): id is string {
  return typeof id === "string" && BATCH_ID.test(id);
}

/** Why `name` is not an acceptable label name, or null. */
export function labelNameProblem(name: string): string | null {
  if (name.length === 0 || name.length > MAX_LABEL_CHARS) {
    return `must be 1..${MAX_LABEL_CHARS} characters`;
  }
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return "must not contain control characters";
  return null;
}

/** Encode a command for proposal. */
export function encodeCommand(c: Command): Uint8Array {
  const wire: unknown[] = [COMMAND_VERSION, c.origin, c.ops.map(opToWire)];
  if (c.time !== undefined) wire.push(c.time);
  const bytes = cborEncode(wire);
  if (bytes.length > MAX_COMMAND_BYTES) {
    throw new RangeError(`command of ${bytes.length} bytes exceeds ${MAX_COMMAND_BYTES}`);
  }
  return bytes;
}

/** Field readers that throw CommandDecodeError naming the field. */
class Fields {
  constructor(private readonly a: unknown[], private readonly what: string) {}
  str(i: number, name: string, allowEmpty = false): string {
    const v = this.a[i];
    if (typeof v !== "string" || v.length > MAX_STRING || (!allowEmpty && v.length === 0)) {
      throw new CommandDecodeError(`${this.what}.${name} must be a string of 1..${MAX_STRING}`);
    }
    return v;
  }
  uint(i: number, name: string): number {
    const v = this.a[i];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw new CommandDecodeError(`${this.what}.${name} must be a non-negative integer`);
    }
    return v;
  }
  int(i: number, name: string): number {
    const v = this.a[i];
    if (typeof v !== "number" || !Number.isSafeInteger(v)) {
      throw new CommandDecodeError(`${this.what}.${name} must be an integer`);
    }
    return v;
  }
  mode(i: number): number {
    const m = this.uint(i, "mode");
    if (m > 0o7777) throw new CommandDecodeError(`${this.what}.mode must be at most 0o7777`);
    return m;
  }
  label(i: number, name: string): string {
    const v = this.a[i];
    const problem = typeof v === "string" ? labelNameProblem(v) : "must be a string";
    if (problem) throw new CommandDecodeError(`${this.what}.${name} ${problem}`);
    return v as string;
  }
  batch(i: number, name: string): string {
    const v = this.a[i];
    if (!isBatchId(v)) {
      throw new CommandDecodeError(`${this.what}.${name} must be 8..64 characters of [0-9a-z-]`);
    }
    return v;
  }
  range(i: number, name: string, min: number, max: number): number {
    const v = this.uint(i, name);
    if (v < min || v > max) {
      throw new CommandDecodeError(`${this.what}.${name} must be in ${min}..${max}`);
    }
    return v;
  }
  hash(i: number, name: string): Uint8Array {
    const v = this.a[i];
    if (!(v instanceof Uint8Array) || v.length !== HASH_LENGTH) {
      throw new CommandDecodeError(`${this.what}.${name} must be ${HASH_LENGTH} bytes`);
    }
    return plain(v).slice();
  }
}

function strings(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.length > MAX_PEER_ADDRS) {
    throw new CommandDecodeError(`${what} must be an array of at most ${MAX_PEER_ADDRS}`);
  }
  return v.map((_, i) => new Fields(v, what).str(i, String(i)));
}

function arity(a: unknown, n: number, what: string, max = n): unknown[] {
  if (!Array.isArray(a) || a.length < n || a.length > max) {
    throw new CommandDecodeError(
      `${what} must be an array of ${n === max ? n : `${n}..${max}`} fields`,
    );
  }
  return a;
}

/** A file op (put, mkdir, delete or rename) only: what a staged part may carry. */
function fileOpFromWire(raw: unknown, what: string): FileOp {
  const tag = Array.isArray(raw) ? raw[0] : undefined;
  if (
    tag !== OP_TAGS.put && tag !== OP_TAGS.mkdir && tag !== OP_TAGS.delete &&
    tag !== OP_TAGS.rename
  ) {
    throw new CommandDecodeError(`${what} must be a put, mkdir, delete or rename op`);
  }
  return opFromWire(raw, what) as FileOp;
}

function fileOpsFromWire(raw: unknown, what: string): FileOp[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_STAGE_OPS) {
    throw new CommandDecodeError(`${what} must be an array of 1..${MAX_STAGE_OPS} file ops`);
  }
  return raw.map((op, j) => fileOpFromWire(op, `${what}[${j}]`));
}

function opFromWire(raw: unknown, what: string): Op {
  if (!Array.isArray(raw) || raw.length === 0) throw new CommandDecodeError(`${what} is not an op`);
  switch (raw[0]) {
    case OP_TAGS.put: {
      const f = new Fields(arity(raw, 9, what), what);
      const kind = KINDS[f.uint(3, "kind")];
      if (kind !== "file" && kind !== "symlink") {
        throw new CommandDecodeError(`${what}.kind must be file or symlink`);
      }
      const target = f.str(8, "target", true);
      if ((kind === "symlink") !== (target.length > 0)) {
        throw new CommandDecodeError(`${what}.target is required for symlinks only`);
      }
      return {
        op: "put",
        path: f.str(1, "path"),
        base: f.uint(2, "base"),
        kind,
        root: f.hash(4, "root"),
        size: f.uint(5, "size"),
        mode: f.mode(6),
        mtime: f.int(7, "mtime"),
        ...(kind === "symlink" ? { target } : {}),
      };
    }
    case OP_TAGS.mkdir: {
      const f = new Fields(arity(raw, 5, what), what);
      return {
        op: "mkdir",
        path: f.str(1, "path"),
        base: f.uint(2, "base"),
        mode: f.mode(3),
        mtime: f.int(4, "mtime"),
      };
    }
    case OP_TAGS.delete: {
      const f = new Fields(arity(raw, 3, what), what);
      return { op: "delete", path: f.str(1, "path"), base: f.uint(2, "base") };
    }
    case OP_TAGS.rename: {
      const f = new Fields(arity(raw, 5, what), what);
      return {
        op: "rename",
        from: f.str(1, "from"),
        fromBase: f.uint(2, "fromBase"),
        to: f.str(3, "to"),
        toBase: f.uint(4, "toBase"),
      };
    }
    case OP_TAGS.peer: {
      const f = new Fields(arity(raw, 3, what), what);
      return { op: "peer", peerId: f.str(1, "peerId"), addrs: strings(raw[2], `${what}.addrs`) };
    }
    case OP_TAGS["use-invite"]: {
      const f = new Fields(arity(raw, 2, what), what);
      return { op: "use-invite", inviteId: f.str(1, "inviteId") };
    }
    case OP_TAGS.label: {
      const f = new Fields(arity(raw, 3, what), what);
      return { op: "label", name: f.label(1, "name"), version: f.uint(2, "version") };
    }
    case OP_TAGS.unlabel: {
      const f = new Fields(arity(raw, 2, what), what);
      return { op: "unlabel", name: f.label(1, "name") };
    }
    case OP_TAGS.prune: {
      const f = new Fields(arity(raw, 4, what), what);
      const keepVersions = f.uint(1, "keepVersions");
      if (keepVersions < 1) throw new CommandDecodeError(`${what}.keepVersions must be at least 1`);
      return { op: "prune", keepVersions, keepMs: f.uint(2, "keepMs"), now: f.uint(3, "now") };
    }
    case OP_TAGS.stage: {
      const f = new Fields(arity(raw, 4, what), what);
      return {
        op: "stage",
        batch: f.batch(1, "batch"),
        part: f.range(2, "part", 0, MAX_STAGE_PART),
        ops: fileOpsFromWire(raw[3], `${what}.ops`),
      };
    }
    case OP_TAGS["commit-batch"]: {
      const f = new Fields(arity(raw, 3, what), what);
      return {
        op: "commit-batch",
        batch: f.batch(1, "batch"),
        parts: f.range(2, "parts", 1, MAX_BATCH_PARTS),
      };
    }
    default:
      throw new CommandDecodeError(`${what} has an unknown op tag`);
  }
}

function safeDecode(bytes: Uint8Array, what: string): unknown {
  if (bytes.length > MAX_COMMAND_BYTES * 64) throw new CommandDecodeError(`${what} is too large`);
  try {
    return cborDecode(bytes);
  } catch (e) {
    throw new CommandDecodeError(`${what} is not valid CBOR: ${(e as Error).message}`);
  }
}

/** Decode and validate a command; throws CommandDecodeError. */
export function decodeCommand(bytes: Uint8Array): Command {
  if (bytes.length > MAX_COMMAND_BYTES) throw new CommandDecodeError("command is too large");
  const a = arity(safeDecode(bytes, "command"), 3, "command", 4);
  if (a[0] !== COMMAND_VERSION) throw new CommandDecodeError(`unknown command version ${a[0]}`);
  const f = new Fields(a, "command");
  const origin = f.str(1, "origin");
  if (!Array.isArray(a[2]) || a[2].length === 0) {
    throw new CommandDecodeError("command.ops must be a non-empty array");
  }
  const time = a.length === 4 ? f.uint(3, "time") : 0;
  return { origin, ops: a[2].map((raw, i) => opFromWire(raw, `ops[${i}]`)), time };
}

/** The file ops of one staged part as the index keeps them (CBOR of their wire form). */
export function encodeFileOps(ops: FileOp[]): Uint8Array {
  return cborEncode(ops.map(opToWire));
}

/** Decode and validate encodeFileOps bytes; throws CommandDecodeError. */
export function decodeFileOps(bytes: Uint8Array, what = "staged ops"): FileOp[] {
  return fileOpsFromWire(safeDecode(bytes, what), what);
}

function recordToWire(r: IndexRecord): unknown[] {
  return [
    r.path,
    r.version,
    KINDS.indexOf(r.kind),
    plain(r.root),
    r.size,
    r.mode,
    r.mtime,
    r.target ?? "",
    r.deleted,
    r.origin,
    r.committedAt ?? 0,
  ];
}

/** A v1 record has 10 fields; v2 adds committedAt. */
function recordFromWire(raw: unknown, what: string, fields: 10 | 11): IndexRecord {
  const f = new Fields(arity(raw, fields, what), what);
  const kind = KINDS[f.uint(2, "kind")];
  if (!kind) throw new CommandDecodeError(`${what}.kind is unknown`);
  const target = f.str(7, "target", true);
  const deleted = (raw as unknown[])[8];
  if (typeof deleted !== "boolean") throw new CommandDecodeError(`${what}.deleted must be bool`);
  return {
    path: f.str(0, "path"),
    version: f.uint(1, "version"),
    kind,
    root: f.hash(3, "root"),
    size: f.uint(4, "size"),
    mode: f.mode(5),
    mtime: f.int(6, "mtime"),
    ...(kind === "symlink" ? { target } : {}),
    deleted,
    origin: f.str(9, "origin", true),
    committedAt: fields === 11 ? f.uint(10, "committedAt") : 0,
  };
}

function array(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new CommandDecodeError(`${what} must be an array`);
  return v;
}

/** Encode the whole index for a Raft snapshot. */
export function encodeSnapshot(s: IndexSnapshot): Uint8Array {
  const b = s.batches;
  const batches = b.parts.length + b.started.length + b.done.length === 0 ? [] : [[
    b.parts.map((p) => [p.batch, p.part, p.index, plain(p.bytes)]),
    b.started.map((x) => [x.batch, x.time, x.index]),
    b.done.map((x) => [x.batch, x.index]),
  ]];
  return cborEncode([
    SNAPSHOT_VERSION,
    s.applied,
    s.peers.map((p) => [p.peerId, p.addrs]),
    s.usedInvites,
    s.records.map(recordToWire),
    s.history.map(recordToWire),
    s.times.map((t) => [t.version, t.time]),
    s.labels.map((l) => [l.name, l.version, l.time, l.index]),
    s.horizon,
    ...batches,
  ]);
}

const NO_BATCHES: IndexSnapshot["batches"] = { parts: [], started: [], done: [] };

function batchesFromWire(raw: unknown): IndexSnapshot["batches"] {
  const a = arity(raw, 3, "snapshot.batches");
  const parts = array(a[0], "batches.parts").map((raw, i) => {
    const what = `batches.parts[${i}]`;
    const f = new Fields(arity(raw, 4, what), what);
    const bytes = (raw as unknown[])[3];
    if (!(bytes instanceof Uint8Array)) throw new CommandDecodeError(`${what}.bytes must be bytes`);
    decodeFileOps(bytes, `${what}.bytes`);
    return {
      batch: f.batch(0, "batch"),
      part: f.range(1, "part", 0, MAX_STAGE_PART),
      index: f.uint(2, "index"),
      bytes: plain(bytes).slice(),
    };
  });
  const started = array(a[1], "batches.started").map((raw, i) => {
    const what = `batches.started[${i}]`;
    const f = new Fields(arity(raw, 3, what), what);
    return { batch: f.batch(0, "batch"), time: f.uint(1, "time"), index: f.uint(2, "index") };
  });
  const done = array(a[2], "batches.done").map((raw, i) => {
    const what = `batches.done[${i}]`;
    const f = new Fields(arity(raw, 2, what), what);
    return { batch: f.batch(0, "batch"), index: f.uint(1, "index") };
  });
  return { parts, started, done };
}

/** Decode a snapshot made by encodeSnapshot (v2, or v1 without history); throws CommandDecodeError. */
export function decodeSnapshot(bytes: Uint8Array): IndexSnapshot {
  const a = arity(safeDecode(bytes, "snapshot"), 5, "snapshot", 10);
  const v1 = a[0] === 1;
  if (!v1 && a[0] !== SNAPSHOT_VERSION) {
    throw new CommandDecodeError(`unknown snapshot version ${a[0]}`);
  }
  if (v1) arity(a, 5, "snapshot");
  else if (a.length < 8) {
    throw new CommandDecodeError("snapshot must be an array of 8..10 fields");
  }
  const applied = new Fields(a, "snapshot").uint(1, "applied");
  const peers = array(a[2], "snapshot.peers").map((raw, i) => {
    const f = new Fields(arity(raw, 2, `peers[${i}]`), `peers[${i}]`);
    return {
      peerId: f.str(0, "peerId"),
      addrs: strings((raw as unknown[])[1], `peers[${i}].addrs`),
    };
  });
  const used = array(a[3], "snapshot.usedInvites");
  const usedInvites = used.map((_, i) => new Fields(used, "usedInvites").str(i, String(i)));
  const fields = v1 ? 10 : 11;
  const records = array(a[4], "snapshot.records").map((raw, i) =>
    recordFromWire(raw, `records[${i}]`, fields)
  );
  if (v1) {
    return {
      applied,
      peers,
      usedInvites,
      records,
      history: [],
      times: [],
      labels: [],
      horizon: 0,
      batches: NO_BATCHES,
    };
  }
  const history = array(a[5], "snapshot.history").map((raw, i) =>
    recordFromWire(raw, `history[${i}]`, 11)
  );
  const times = array(a[6], "snapshot.times").map((raw, i) => {
    const f = new Fields(arity(raw, 2, `times[${i}]`), `times[${i}]`);
    return { version: f.uint(0, "version"), time: f.uint(1, "time") };
  });
  const labels = array(a[7], "snapshot.labels").map((raw, i) => {
    const f = new Fields(arity(raw, 4, `labels[${i}]`), `labels[${i}]`);
    return {
      name: f.label(0, "name"),
      version: f.uint(1, "version"),
      time: f.uint(2, "time"),
      index: f.uint(3, "index"),
    };
  });
  // Version 2 snapshots written before the history horizon existed have 8 fields.
  const horizon = a.length >= 9 ? new Fields(a, "snapshot").uint(8, "horizon") : 0;
  // The 10th element (staged batches) is written only when there are any.
  const batches = a.length === 10 ? batchesFromWire(a[9]) : NO_BATCHES;
  return { applied, peers, usedInvites, records, history, times, labels, horizon, batches };
}

/** Everything the file index state machine holds. */
export interface IndexSnapshot {
  applied: number;
  peers: { peerId: string; addrs: string[] }[];
  usedInvites: string[];
  /** Head records (the current version of every path, tombstones included). */
  records: IndexRecord[];
  /** Retained older versions (head versions are not repeated here). */
  history: IndexRecord[];
  /** Commit time of each file-changing entry. */
  times: { version: number; time: number }[];
  /** `index`: the entry that created the label. */
  labels: { name: string; version: number; time: number; index: number }[];
  /** Oldest version whose whole tree is exact (IndexState.horizon); 0 = nothing pruned. */
  horizon: number;
  /**
   * Staged batches not yet removed by a prune, so a node restored between a batch's stage
   * entries and its commit-batch applies the commit like every other node. `parts[].bytes`:
   * a part's file ops (encodeFileOps), `index` the entry that staged it; `started`: the first
   * stage entry's time and index; `done`: the entry that committed (or refused) the batch.
   */
  batches: {
    parts: { batch: string; part: number; index: number; bytes: Uint8Array }[];
    started: { batch: string; time: number; index: number }[];
    done: { batch: string; index: number }[];
  };
}
