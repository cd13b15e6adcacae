/**
 * Encoding of file index commands (Raft entry payloads) and snapshots: CBOR (cbor-x) of
 * positional arrays, decoded strictly. A command comes from a peer, so anything malformed,
 * oversized or unknown is a CommandDecodeError, never a crash or a half-read command.
 *
 * Command: [1, origin, ops] or [1, origin, ops, time]; the optional 4th element is the commit
 * time (unix ms) so commands from older nodes still decode (as time 0).
 * Snapshot v2 adds history, commit times and labels to v1; v1 still decodes (no history).
 */
import { cborDecode, cborEncode } from "../wire/mod.ts";
import { HASH_LENGTH } from "../chunk/mod.ts";
import type { Command, FileKind, IndexRecord, Op } from "./types.ts";

const COMMAND_VERSION = 1;
const SNAPSHOT_VERSION = 2;
/** Largest encoded command accepted (tens of thousands of ops of typical paths fit). */
export const MAX_COMMAND_BYTES = 4 * 1024 * 1024;
const MAX_STRING = 4096;

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
  }
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

function opFromWire(raw: unknown, i: number): Op {
  const what = `ops[${i}]`;
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
  return { origin, ops: a[2].map(opFromWire), time };
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
  ]);
}

/** Decode a snapshot made by encodeSnapshot (v2, or v1 without history); throws CommandDecodeError. */
export function decodeSnapshot(bytes: Uint8Array): IndexSnapshot {
  const a = arity(safeDecode(bytes, "snapshot"), 5, "snapshot", 9);
  const v1 = a[0] === 1;
  if (!v1 && a[0] !== SNAPSHOT_VERSION) {
    throw new CommandDecodeError(`unknown snapshot version ${a[0]}`);
  }
  if (v1) arity(a, 5, "snapshot");
  else if (a.length !== 8 && a.length !== 9) {
    throw new CommandDecodeError("snapshot must be an array of 8 or 9 fields");
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
    return { applied, peers, usedInvites, records, history: [], times: [], labels: [], horizon: 0 };
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
  const horizon = a.length === 9 ? new Fields(a, "snapshot").uint(8, "horizon") : 0;
  return { applied, peers, usedInvites, records, history, times, labels, horizon };
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
}
