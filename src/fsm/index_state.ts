/**
 * The replicated file index as a Raft state machine, kept in Deno KV. Every node applies the
 * same committed commands in the same order and so holds the same index.
 *
 * A command's ops are applied all or none, each checked against the version it was based on
 * (compare-and-swap); the new version of every path it touches is the entry's log index.
 *
 * KV layout under the prefix:
 * - ["rec", path] the head (current version) of a path, for fast current reads;
 * - ["fold", caseFold(path)] -> the live path with that folded form (case conflicts);
 * - ["hist", path, version] every retained version (the head too), so the index can be read as
 *   of an earlier log index (MVCC) and a garbage collector knows which content is still needed;
 * - ["ver", version, path] the reverse index: which paths an entry wrote (used to undo it);
 * - ["time", version] -> commit time of each file-changing entry (for versionAt);
 * - ["label", name] -> {version, time, index}: named cluster-wide snapshots, pinned by prunes;
 * - ["applied"] the last applied log index, ["peer", id], ["used", inviteId] metadata;
 * - ["stage", batch, part, i] -> {index, n, bytes}: chunk i of n (at most 60 KiB each, as KV
 *   values are capped at 64 KiB) of a staged part's encoded file ops, `index` the entry that
 *   staged it (a reader can tell a part half-replaced by an apply in progress);
 * - ["stage-at", batch] -> {time, index} of the batch's first stage entry (abandoned batches
 *   are dropped by a prune a day later); ["stage-done", batch] -> the entry that committed or
 *   refused it, so it is not staged or committed again (until a prune drops it with the
 *   parts; a replayed commit-batch then finds its parts missing).
 *
 * One command may carry tens of thousands of ops, more than one KV commit holds, so an apply
 * may take several commits. It stays invisible until done: `applied` is written last, and
 * reads without an explicit version are taken at `applied`, replacing any newer head with its
 * history version. A crash half-way leaves versions above `applied`; before the re-delivered
 * entry is applied again, they are undone (undoUnapplied) from the "ver" index. Each path's
 * head, history and "ver" key (and every path sharing its case fold) commit together, so the
 * undo always finds what was written.
 *
 * A batch too large for one Raft entry (MAX_COMMAND_BYTES) is staged: each `stage` entry keeps
 * one part's ops aside, and one `commit-batch` entry applies all parts exactly like one command
 * of up to MAX_BATCH_OPS ops (same checks, same multi-commit apply and undo). It never deletes
 * the parts, so a crash half-way re-reads them on re-delivery; prunes clean them up later.
 */
import type { Hash } from "../chunk/mod.ts";
import { toHex } from "../chunk/mod.ts";
import { EMPTY_FILE_ROOT } from "../merkle/mod.ts";
import {
  CommandDecodeError,
  decodeCommand,
  decodeFileOps,
  decodeSnapshot,
  encodeFileOps,
  encodeSnapshot,
  type IndexSnapshot,
  isBatchId,
  MAX_BATCH_PARTS,
} from "./codec.ts";
import { type CommitLimits, KV_LIMITS, KvBatches, type Mutation } from "./kv_batch.ts";
import { ancestors, caseFold, indexPathProblem } from "./paths.ts";
import { KV_GET_MANY, LIST_ALL_BATCH, mapLimit } from "../util/mod.ts";

/** KV reads in flight at once while a command's entries are read up front (see #prime). */
const PRIME_READS_AT_ONCE = 16;
import type {
  ApplyResult,
  Command,
  CommitBatch,
  FileOp,
  IndexRecord,
  Op,
  Prune,
  RejectCode,
  Stage,
} from "./types.ts";

/**
 * Most ops in one command. The encoded command is also capped (MAX_COMMAND_BYTES); applying a
 * large one takes several KV commits, made atomic by writing `applied` last.
 */
export const MAX_OPS_PER_COMMAND = 50_000;
/** Most file ops of one staged batch, all parts together (applied by one commit-batch). */
export const MAX_BATCH_OPS = 500_000;
/** A staged batch not committed within this long of its first part is dropped by a prune. */
export const STAGE_ABANDON_MS = 24 * 60 * 60 * 1000;
/** Largest chunk of a staged part's bytes in one KV value (values are capped at 64 KiB). */
const STAGE_CHUNK_BYTES = 60 * 1024;

type StoredRecord = Omit<IndexRecord, "path">;
interface StoredLabel {
  version: number;
  time: number;
  /** Entry that created it: lets a re-delivered entry see its own half-written label as absent. */
  index: number;
}

/** One chunk of a staged part: chunk i of `n`, written by entry `index`. */
interface StoredChunk {
  index: number;
  n: number;
  bytes: Uint8Array;
}
interface StoredStageAt {
  time: number;
  index: number;
}

/** A named snapshot of the index. */
export interface IndexLabel {
  name: string;
  version: number;
  /** Commit time of the entry that created the label. */
  time: number;
}

/** Options of an IndexState, mostly for tests. */
export interface IndexStateOptions {
  /**
   * Called after each KV commit of an apply (1-based count, entry index). Tests throw here to
   * simulate a crash half-way, or wait to pause an apply.
   */
  afterCommit?: (commit: number, index: number) => void | Promise<void>;
  /** Per-commit limits (default: Deno KV's, with margin). Tests lower them. */
  commitLimits?: Partial<CommitLimits>;
}

class Rejection extends Error {
  constructor(
    readonly code: RejectCode,
    readonly path: string,
    message: string,
    readonly current: number,
  ) {
    super(message);
  }
}

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i === -1 ? "" : path.slice(0, i);
}

function toRecord(path: string, stored: StoredRecord): IndexRecord {
  return { path, ...stored, committedAt: stored.committedAt ?? 0 };
}

/** Pending changes of one command, read-through to KV. */
class Overlay {
  readonly changed = new Map<string, IndexRecord>();
  /** Heads as they were before this command (cached reads). */
  readonly before = new Map<string, IndexRecord | null>();
  /** Changed paths by case fold, and live changed paths by parent directory. */
  readonly byFold = new Map<string, Set<string>>();
  readonly liveKids = new Map<string, Set<string>>();
  readonly peers = new Map<string, string[]>();
  readonly usedInvites = new Set<string>();
  readonly labels = new Map<string, StoredLabel | null>();
  /** Case-fold index entries as they were before this command (cached reads). */
  readonly folds = new Map<string, string | null>();
  constructor(private readonly read: (path: string) => Promise<IndexRecord | null>) {}

  async get(path: string): Promise<IndexRecord | null> {
    const c = this.changed.get(path);
    if (c) return c;
    if (this.before.has(path)) return this.before.get(path)!;
    const r = await this.read(path);
    this.before.set(path, r);
    return r;
  }

  set(rec: IndexRecord): void {
    this.changed.set(rec.path, rec);
    const fold = caseFold(rec.path);
    let same = this.byFold.get(fold);
    if (!same) this.byFold.set(fold, same = new Set());
    same.add(rec.path);
    const parent = parentOf(rec.path);
    let kids = this.liveKids.get(parent);
    if (!kids) this.liveKids.set(parent, kids = new Set());
    if (rec.deleted) kids.delete(rec.path);
    else kids.add(rec.path);
  }
}

/** The file index state machine over a Deno KV database, under a key prefix. */
export class IndexState {
  readonly #limits: CommitLimits;
  /** History keys exist for every head (set once per KV; older data is backfilled). */
  #histReady = false;
  /** No apply of this instance stopped half-way; false at start, so the first apply undoes. */
  #clean = false;
  /** See `generation`. */
  #generation = 0;

  constructor(
    private readonly kv: Deno.Kv,
    private readonly prefix: Deno.KvKey = ["fsm"],
    private readonly options: IndexStateOptions = {},
  ) {
    this.#limits = { ...KV_LIMITS, ...options.commitLimits };
  }

  #rec(path: string): Deno.KvKey {
    return [...this.prefix, "rec", path];
  }
  #foldKey(fold: string): Deno.KvKey {
    return [...this.prefix, "fold", fold];
  }
  #hist(path: string, version: number): Deno.KvKey {
    return [...this.prefix, "hist", path, version];
  }
  #ver(version: number, path: string): Deno.KvKey {
    return [...this.prefix, "ver", version, path];
  }
  #time(version: number): Deno.KvKey {
    return [...this.prefix, "time", version];
  }
  #label(name: string): Deno.KvKey {
    return [...this.prefix, "label", name];
  }
  get #appliedKey(): Deno.KvKey {
    return [...this.prefix, "applied"];
  }
  get #histReadyKey(): Deno.KvKey {
    return [...this.prefix, "hist-ready"];
  }
  #peer(peerId: string): Deno.KvKey {
    return [...this.prefix, "peer", peerId];
  }
  #used(inviteId: string): Deno.KvKey {
    return [...this.prefix, "used", inviteId];
  }
  #stagePart(batch: string, part: number): Deno.KvKey {
    return [...this.prefix, "stage", batch, part];
  }
  #stageAt(batch: string): Deno.KvKey {
    return [...this.prefix, "stage-at", batch];
  }
  #stageDone(batch: string): Deno.KvKey {
    return [...this.prefix, "stage-done", batch];
  }

  /** The chunk writes that store a staged part's bytes. */
  #chunkMutations(batch: string, part: number, index: number, bytes: Uint8Array): Mutation[] {
    const n = Math.max(1, Math.ceil(bytes.length / STAGE_CHUNK_BYTES));
    const out: Mutation[] = [];
    for (let i = 0; i < n; i++) {
      const chunk = bytes.slice(i * STAGE_CHUNK_BYTES, (i + 1) * STAGE_CHUNK_BYTES);
      out.push({
        key: [...this.#stagePart(batch, part), i],
        value: { index, n, bytes: chunk } satisfies StoredChunk,
      });
    }
    return out;
  }

  /**
   * A staged part's bytes and the entry that staged it, or null if it is absent or not whole
   * (an apply in progress is replacing it) or, with `maxIndex`, staged above it.
   */
  async #readPart(
    batch: string,
    part: number,
    maxIndex = Infinity,
  ): Promise<{ index: number; bytes: Uint8Array } | null> {
    const chunks: StoredChunk[] = [];
    for await (const e of this.kv.list<StoredChunk>({ prefix: this.#stagePart(batch, part) })) {
      if (e.key[e.key.length - 1] !== chunks.length) return null;
      chunks.push(e.value);
    }
    if (chunks.length === 0) return null;
    const { index, n } = chunks[0];
    if (n !== chunks.length || index > maxIndex) return null;
    if (chunks.some((c) => c.index !== index || c.n !== n)) return null;
    const bytes = new Uint8Array(chunks.reduce((sum, c) => sum + c.bytes.length, 0));
    let at = 0;
    for (const c of chunks) {
      bytes.set(c.bytes, at);
      at += c.bytes.length;
    }
    return { index, bytes };
  }

  /**
   * The file ops of parts 0..parts-1 of a staged batch, in order, as of the applied index:
   * what its commit-batch would apply. Null if a part is missing, the batch is done (committed
   * or refused), or it holds more than MAX_BATCH_OPS ops.
   */
  async stagedOps(batch: string, parts: number): Promise<FileOp[] | null> {
    if (!isBatchId(batch) || !Number.isSafeInteger(parts) || parts < 1) return null;
    if (parts > MAX_BATCH_PARTS) return null;
    const applied = await this.applied();
    if ((await this.kv.get(this.#stageDone(batch))).value !== null) return null;
    const ops: FileOp[] = [];
    for (let part = 0; part < parts; part++) {
      const stored = await this.#readPart(batch, part, applied);
      if (!stored) return null;
      let partOps: FileOp[];
      try {
        partOps = decodeFileOps(stored.bytes);
      } catch (e) {
        if (e instanceof CommandDecodeError) return null;
        throw e;
      }
      if (ops.length + partOps.length > MAX_BATCH_OPS) return null;
      for (const op of partOps) ops.push(op);
    }
    return ops;
  }

  #batches(index = 0): KvBatches {
    const hook = this.options.afterCommit;
    return new KvBatches(this.kv, this.#limits, hook && ((n) => hook(n, index)));
  }

  /** The replicated address book: where each member said it can be reached. */
  async peers(): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for await (const e of this.kv.list<string[]>({ prefix: [...this.prefix, "peer"] })) {
      out.set(e.key[e.key.length - 1] as string, e.value);
    }
    return out;
  }

  /** Whether a single-use invite has been consumed. */
  async inviteUsed(inviteId: string): Promise<boolean> {
    return (await this.kv.get(this.#used(inviteId))).value !== null;
  }

  /**
   * Bumped whenever records may have changed other than as `changedPaths` lists them (a
   * snapshot restored, history or tombstones pruned, an unfinished apply undone): a reader
   * that keeps records between reads must then read them all again. Per instance, in memory.
   */
  get generation(): number {
    return this.#generation;
  }

  /**
   * The paths of the versions after `after` up to `upTo` (the entries applied in between), in
   * version order, each once; null if there are more than `limit` path versions. With
   * `generation` unchanged meanwhile, these are exactly the paths whose record (as read at
   * `upTo`) may differ from what it was at `after`.
   */
  async changedPaths(after: number, upTo: number, limit = Infinity): Promise<string[] | null> {
    const out = new Set<string>();
    const iter = this.kv.list(
      { start: this.#ver(after + 1, ""), end: this.#ver(upTo + 1, "") },
      Number.isFinite(limit)
        ? { limit: limit + 1, batchSize: LIST_ALL_BATCH }
        : { batchSize: LIST_ALL_BATCH },
    );
    let versions = 0;
    for await (const e of iter) {
      if (++versions > limit) return null;
      out.add(e.key[e.key.length - 1] as string);
    }
    return [...out];
  }

  /** Index of the last applied entry (0 before the first). */
  async applied(): Promise<number> {
    return (await this.kv.get<number>(this.#appliedKey)).value ?? 0;
  }

  /** The read version: `at` if given (never past applied), else the applied index. */
  async #readAt(at: number | undefined): Promise<number> {
    const applied = await this.applied();
    return at === undefined ? applied : Math.min(at, applied);
  }

  /** The head record as stored, even if an apply in progress wrote it. */
  async #head(path: string): Promise<IndexRecord | null> {
    const e = await this.kv.get<StoredRecord>(this.#rec(path));
    return e.value ? toRecord(path, e.value) : null;
  }

  /** The newest retained version of `path` at or below `at`. */
  async #histAt(path: string, at: number): Promise<IndexRecord | null> {
    const iter = this.kv.list<StoredRecord>(
      { start: [...this.prefix, "hist", path], end: this.#hist(path, at + 1) },
      { reverse: true, limit: 1 },
    );
    for await (const e of iter) return toRecord(path, e.value);
    return null;
  }

  /**
   * The record at `path` (live or tombstone) as of version `at` (default: the applied index,
   * so a multi-commit apply in progress stays invisible), or null.
   */
  async get(path: string, options: { at?: number } = {}): Promise<IndexRecord | null> {
    const at = await this.#readAt(options.at);
    const head = await this.#head(path);
    if (!head || head.version <= at) return head;
    return await this.#histAt(path, at);
  }

  /** Head records in path order, as stored. */
  async *#heads(prefix?: string): AsyncGenerator<IndexRecord> {
    const selector: Deno.KvListSelector = prefix
      ? { start: this.#rec(`${prefix}/`), end: this.#rec(`${prefix}0`) }
      : { prefix: [...this.prefix, "rec"] };
    // Whole-index listings are the common case (a sync pass's full reload): fewer round trips.
    for await (const e of this.kv.list<StoredRecord>(selector, { batchSize: LIST_ALL_BATCH })) {
      yield toRecord(e.key[e.key.length - 1] as string, e.value);
    }
  }

  /**
   * Every record (tombstones included when asked) under `prefix`, in path order, as of version
   * `at` (default: the applied index, read first). A reader sees the index before or after an
   * entry, never a mix, even while a multi-commit apply is in progress.
   */
  async *list(
    options: { tombstones?: boolean; prefix?: string; at?: number } = {},
  ): AsyncGenerator<IndexRecord> {
    const at = await this.#readAt(options.at);
    for await (const head of this.#heads(options.prefix)) {
      const rec = head.version <= at ? head : await this.#histAt(head.path, at);
      if (!rec || (!options.tombstones && rec.deleted)) continue;
      yield rec;
    }
  }

  /** Every retained version of `path` up to the applied index, newest first. */
  async history(path: string): Promise<IndexRecord[]> {
    const applied = await this.applied();
    const out: IndexRecord[] = [];
    const iter = this.kv.list<StoredRecord>({ prefix: [...this.prefix, "hist", path] }, {
      reverse: true,
    });
    for await (const e of iter) if (e.value.version <= applied) out.push(toRecord(path, e.value));
    return out;
  }

  /**
   * The newest applied file-changing version whose commit time is at most `timeMs` (0 if
   * none). Times come from the proposers' clocks and so need not grow with the version.
   */
  /**
   * The oldest version whose whole tree is still exact: prunes dropped versions that states
   * before it needed. Labelled versions stay exact whatever the horizon (prunes pin them).
   */
  async horizon(): Promise<number> {
    return (await this.kv.get<number>(this.#horizonKey)).value ?? 0;
  }

  get #horizonKey(): Deno.KvKey {
    return [...this.prefix, "horizon"];
  }

  async versionAt(timeMs: number): Promise<number> {
    const applied = await this.applied();
    const iter = this.kv.list<number>(
      { prefix: [...this.prefix, "time"], end: this.#time(applied + 1) },
      { reverse: true },
    );
    for await (const e of iter) {
      if (e.value <= timeMs) return e.key[e.key.length - 1] as number;
    }
    return 0;
  }

  /** Every label, in name order. */
  async labels(): Promise<IndexLabel[]> {
    const out: IndexLabel[] = [];
    for await (const e of this.kv.list<StoredLabel>({ prefix: [...this.prefix, "label"] })) {
      out.push({
        name: e.key[e.key.length - 1] as string,
        version: e.value.version,
        time: e.value.time,
      });
    }
    return out;
  }

  /** One label, or null. */
  async label(name: string): Promise<IndexLabel | null> {
    const v = (await this.kv.get<StoredLabel>(this.#label(name))).value;
    return v ? { name, version: v.version, time: v.time } : null;
  }

  /**
   * The distinct content roots (live files) of every retained version, heads included: what a
   * chunk garbage collector must keep.
   */
  async *retainedRoots(): AsyncGenerator<Hash> {
    const seen = new Set<string>();
    for (const part of ["rec", "hist"]) {
      for await (const e of this.kv.list<StoredRecord>({ prefix: [...this.prefix, part] })) {
        if (e.value.kind !== "file" || e.value.deleted) continue;
        const hex = toHex(e.value.root);
        if (seen.has(hex)) continue;
        seen.add(hex);
        yield e.value.root;
      }
    }
  }

  /**
   * Apply the committed entry `index` carrying an encoded Command. Deterministic: the result
   * depends only on the state and the entry. Invalid commands are rejected, not thrown, so
   * the log moves on identically everywhere.
   */
  async apply(index: number, data: Uint8Array): Promise<ApplyResult> {
    await this.#ensureHistory();
    const applied = await this.applied();
    if (index <= applied) {
      return {
        ok: false,
        code: "invalid",
        path: "",
        message: "entry already applied",
        current: applied,
      };
    }
    if (!this.#clean) await this.undoUnapplied();
    this.#clean = false;
    const result = await this.#apply(index, data);
    this.#clean = true;
    return result;
  }

  async #apply(index: number, data: Uint8Array): Promise<ApplyResult> {
    let command: Command;
    try {
      command = decodeCommand(data);
    } catch (e) {
      await this.kv.set(this.#appliedKey, index);
      return { ok: false, code: "invalid", path: "", message: (e as Error).message, current: 0 };
    }
    const time = command.time ?? 0;
    const overlay = new Overlay((path) => this.#head(path));
    try {
      if (command.ops.length > MAX_OPS_PER_COMMAND) {
        throw new Rejection(
          "invalid",
          "",
          `more than ${MAX_OPS_PER_COMMAND} ops in one command`,
          0,
        );
      }
      const alone = command.ops.find((op): op is Prune | Stage | CommitBatch =>
        op.op === "prune" || op.op === "stage" || op.op === "commit-batch"
      );
      if (alone) {
        if (command.ops.length !== 1) {
          throw new Rejection("invalid", "", `a ${alone.op} must be the only op of its command`, 0);
        }
        if (alone.op === "prune") return await this.#prune(index, alone);
        if (alone.op === "stage") return await this.#stage(index, alone, time);
        return await this.#commitBatch(index, alone, command.origin, time);
      }
      await this.#prime(command.ops, overlay);
      for (const op of command.ops) await this.#check(op, index, command.origin, time, overlay);
    } catch (e) {
      if (!(e instanceof Rejection)) throw e;
      await this.kv.set(this.#appliedKey, index);
      return { ok: false, code: e.code, path: e.path, message: e.message, current: e.current };
    }
    return await this.#write(index, time, overlay);
  }

  /**
   * Keep one part of a staged batch aside (replacing a part staged before with that number).
   * Only chunk keys beyond the new part's count are deleted; the others are overwritten. A
   * crash half-way leaves a part whose chunks disagree (readers see it as absent) until the
   * re-delivered entry writes it again; `applied` and "stage-at" are written last.
   */
  async #stage(index: number, op: Stage, time: number): Promise<ApplyResult> {
    const done = (await this.kv.get<number>(this.#stageDone(op.batch))).value;
    if (done !== null) {
      throw new Rejection("invalid", "", `batch ${op.batch} was committed already`, done);
    }
    const writes = this.#chunkMutations(op.batch, op.part, index, encodeFileOps(op.ops));
    const batches = this.#batches(index);
    for await (const e of this.kv.list({ prefix: this.#stagePart(op.batch, op.part) })) {
      if ((e.key[e.key.length - 1] as number) >= writes.length) await batches.add({ key: e.key });
    }
    for (const w of writes) await batches.add(w);
    const last: Mutation[] = [{ key: this.#appliedKey, value: index }];
    if ((await this.kv.get(this.#stageAt(op.batch))).value === null) {
      last.unshift({ key: this.#stageAt(op.batch), value: { time, index } });
    }
    await batches.add(...last);
    await batches.flush();
    return { ok: true, version: index };
  }

  /**
   * Apply a staged batch's parts as one command from `origin` (see CommitBatch), and mark the
   * batch done in the final commit, with `applied`, whether it applied or was refused. The
   * parts stay: a re-delivery after a crash half-way reads them again.
   */
  async #commitBatch(
    index: number,
    op: CommitBatch,
    origin: string,
    time: number,
  ): Promise<ApplyResult> {
    const doneKey = this.#stageDone(op.batch);
    const done = (await this.kv.get<number>(doneKey)).value;
    if (done !== null) {
      throw new Rejection("invalid", "", `batch ${op.batch} was committed already`, done);
    }
    const overlay = new Overlay((path) => this.#head(path));
    try {
      const ops: FileOp[] = [];
      for (let part = 0; part < op.parts; part++) {
        const stored = await this.#readPart(op.batch, part);
        if (!stored) {
          throw new Rejection("invalid", "", `part ${part} of batch ${op.batch} is missing`, 0);
        }
        let partOps: FileOp[];
        try {
          partOps = decodeFileOps(stored.bytes, `part ${part} of batch ${op.batch}`);
        } catch (e) {
          if (!(e instanceof CommandDecodeError)) throw e;
          throw new Rejection("invalid", "", e.message, 0);
        }
        if (ops.length + partOps.length > MAX_BATCH_OPS) {
          throw new Rejection("invalid", "", `more than ${MAX_BATCH_OPS} ops in one batch`, 0);
        }
        for (const fileOp of partOps) ops.push(fileOp);
      }
      for (const fileOp of ops) await this.#check(fileOp, index, origin, time, overlay);
    } catch (e) {
      if (!(e instanceof Rejection)) throw e;
      const r = await this.kv.atomic()
        .set(doneKey, index)
        .set(this.#appliedKey, index)
        .commit();
      if (!r.ok) throw new Error("file index KV commit failed");
      return { ok: false, code: e.code, path: e.path, message: e.message, current: e.current };
    }
    return await this.#write(index, time, overlay, [{ key: doneKey, value: index }]);
  }

  /**
   * Write a checked command's changes (the overlay) as version `index`; `last` goes into the
   * final commit with `applied`.
   */
  async #write(
    index: number,
    time: number,
    overlay: Overlay,
    last: Mutation[] = [],
  ): Promise<ApplyResult> {
    const batches = this.#batches(index);
    // Everything of one case fold in one commit: the undo then restores heads and fold together.
    const byFold = new Map<string, IndexRecord[]>();
    for (const rec of overlay.changed.values()) {
      const fold = caseFold(rec.path);
      const same = byFold.get(fold);
      if (same) same.push(rec);
      else byFold.set(fold, [rec]);
    }
    for (const [fold, recs] of byFold) {
      const group: Mutation[] = [];
      let live: string | null = null;
      let wasLive = false;
      for (const rec of recs) {
        const { path, ...stored } = rec;
        group.push(
          { key: this.#rec(path), value: stored },
          { key: this.#hist(path, index), value: stored },
          { key: this.#ver(index, path), value: true },
        );
        if (!rec.deleted) live = path;
        const before = overlay.before.has(path) ? overlay.before.get(path) : await this.#head(path);
        if (before && !before.deleted) wasLive = true;
      }
      if (live) group.push({ key: this.#foldKey(fold), value: live });
      else if (wasLive) group.push({ key: this.#foldKey(fold) });
      await batches.add(...group);
    }
    for (const [peerId, addrs] of overlay.peers) {
      await batches.add({ key: this.#peer(peerId), value: addrs });
    }
    for (const id of overlay.usedInvites) await batches.add({ key: this.#used(id), value: index });
    for (const [name, label] of overlay.labels) {
      await batches.add({ key: this.#label(name), value: label ?? undefined });
    }
    if (overlay.changed.size > 0) last.push({ key: this.#time(index), value: time });
    await batches.add(...last, { key: this.#appliedKey, value: index });
    await batches.flush();
    return { ok: true, version: index };
  }

  /**
   * Revert what an apply that stopped half-way (a crash) wrote above the applied index: drop
   * those history and "ver" keys, restore each head from its newest older version (or remove
   * it) and fix its case-fold key. Runs before the first apply of an instance; returns the
   * number of versions undone.
   */
  async undoUnapplied(): Promise<number> {
    const applied = await this.applied();
    const written = new Map<string, number[]>();
    const iter = this.kv.list({
      prefix: [...this.prefix, "ver"],
      start: this.#ver(applied + 1, ""),
    });
    for await (const e of iter) {
      const [version, path] = e.key.slice(-2) as [number, string];
      const vs = written.get(path);
      if (vs) vs.push(version);
      else written.set(path, [version]);
    }
    if (written.size === 0) return 0;
    this.#generation++;
    const byFold = new Map<string, string[]>();
    for (const path of written.keys()) {
      const fold = caseFold(path);
      const same = byFold.get(fold);
      if (same) same.push(path);
      else byFold.set(fold, [path]);
    }
    const batches = this.#batches();
    let undone = 0;
    for (const [fold, paths] of byFold) {
      const group: Mutation[] = [];
      let live: string | null = null;
      for (const path of paths) {
        for (const v of written.get(path)!) {
          group.push({ key: this.#hist(path, v) }, { key: this.#ver(v, path) });
          undone++;
        }
        const prev = await this.#histAt(path, applied);
        if (prev) {
          const { path: _, ...stored } = prev;
          group.push({ key: this.#rec(path), value: stored });
          if (!prev.deleted) live = path;
        } else group.push({ key: this.#rec(path) });
      }
      if (live) group.push({ key: this.#foldKey(fold), value: live });
      else {
        const cur = (await this.kv.get<string>(this.#foldKey(fold))).value;
        if (cur !== null && paths.includes(cur)) group.push({ key: this.#foldKey(fold) });
      }
      await batches.add(...group);
    }
    await batches.flush();
    return undone;
  }

  /** Backfill history keys for heads written before history existed (once per KV). */
  async #ensureHistory(): Promise<void> {
    if (this.#histReady) return;
    if (!(await this.kv.get(this.#histReadyKey)).value) {
      const batches = this.#batches();
      for await (const head of this.#heads()) {
        const { path, ...stored } = head;
        await batches.add(
          { key: this.#hist(path, head.version), value: stored },
          { key: this.#ver(head.version, path), value: true },
        );
      }
      await batches.add({ key: this.#histReadyKey, value: true });
      await batches.flush();
    }
    this.#histReady = true;
  }

  /**
   * Drop history the prune op does not keep (see Prune). Deletes are idempotent and `applied`
   * is written last, so a crash half-way and re-delivery converge on the same state.
   */
  async #prune(index: number, op: Prune): Promise<ApplyResult> {
    const pins = (await this.labels()).map((l) => l.version);
    const cutoff = op.now - op.keepMs;
    const batches = this.#batches(index);
    let pruned = 0;
    let horizon = await this.horizon();
    const finish = async (path: string, versions: IndexRecord[]) => {
      const n = versions.length;
      const head = versions[n - 1];
      const keep = new Set<number>();
      for (let i = Math.max(0, n - op.keepVersions); i < n; i++) keep.add(versions[i].version);
      for (const v of versions) if (v.committedAt! >= cutoff) keep.add(v.version);
      // The version that was current at the window's start: a read at any time inside the
      // window must find it, not an older one or nothing.
      for (let i = n - 1; i >= 0; i--) {
        if (versions[i].committedAt! < cutoff) {
          keep.add(versions[i].version);
          break;
        }
      }
      for (const pin of pins) {
        for (let i = n - 1; i >= 0; i--) {
          if (versions[i].version <= pin) {
            keep.add(versions[i].version);
            break;
          }
        }
      }
      for (let i = 0; i < n; i++) {
        const v = versions[i];
        if (keep.has(v.version)) continue;
        await batches.add({ key: this.#hist(path, v.version) }, {
          key: this.#ver(v.version, path),
        });
        pruned++;
        // States from v up to its successor needed it: reads there are no longer exact.
        horizon = Math.max(horizon, versions[i + 1].version);
      }
      if (
        head.deleted && keep.size === 1 && head.committedAt! < cutoff &&
        !pins.some((pin) => pin >= head.version)
      ) {
        await batches.add(
          { key: this.#rec(path) },
          { key: this.#hist(path, head.version) },
          { key: this.#ver(head.version, path) },
        );
        pruned++;
      }
    };
    let path: string | null = null;
    let versions: IndexRecord[] = [];
    for await (const e of this.kv.list<StoredRecord>({ prefix: [...this.prefix, "hist"] })) {
      const p = e.key[e.key.length - 2] as string;
      if (p !== path) {
        if (path !== null) await finish(path, versions);
        path = p;
        versions = [];
      }
      versions.push(toRecord(p, e.value));
    }
    if (path !== null) await finish(path, versions);
    const batchesRemoved = await this.#dropBatches(op.now, batches);
    await batches.add({ key: this.#horizonKey, value: horizon });
    await batches.add({ key: this.#appliedKey, value: index });
    await batches.flush();
    if (pruned > 0) this.#generation++; // a pruned tombstone leaves no "ver" key behind
    return { ok: true, version: index, pruned, ...(batchesRemoved > 0 ? { batchesRemoved } : {}) };
  }

  /**
   * Drop the staged data of every batch that is done, or whose first part was staged more
   * than STAGE_ABANDON_MS before `now` (its client gave up or died). Its parts go first and
   * its "stage-at"/"stage-done" keys last, so a re-delivered prune finds it again.
   */
  async #dropBatches(now: number, batches: KvBatches): Promise<number> {
    const drop = new Set<string>();
    for await (const e of this.kv.list({ prefix: [...this.prefix, "stage-done"] })) {
      drop.add(e.key[e.key.length - 1] as string);
    }
    const cutoff = now - STAGE_ABANDON_MS;
    for await (const e of this.kv.list<StoredStageAt>({ prefix: [...this.prefix, "stage-at"] })) {
      if (e.value.time < cutoff) drop.add(e.key[e.key.length - 1] as string);
    }
    for (const batch of drop) {
      for await (const e of this.kv.list({ prefix: [...this.prefix, "stage", batch] })) {
        await batches.add({ key: e.key });
      }
      await batches.add({ key: this.#stageAt(batch) }, { key: this.#stageDone(batch) });
    }
    return drop.size;
  }

  /** Validate one op against the overlay and stage its effect; throws Rejection. */
  async #check(op: Op, version: number, origin: string, time: number, o: Overlay): Promise<void> {
    const base = { version, origin, deleted: false, committedAt: time };
    switch (op.op) {
      case "peer":
        o.peers.set(op.peerId, op.addrs);
        return;
      case "use-invite": {
        // An entry re-delivered after a crash may find its own mark: that is not a use.
        const by = (await this.kv.get<number>(this.#used(op.inviteId))).value;
        if (o.usedInvites.has(op.inviteId) || (by !== null && by !== version)) {
          throw new Rejection("invite-used", "", "this single-use invite was used already", 0);
        }
        o.usedInvites.add(op.inviteId);
        return;
      }
      case "label": {
        if (op.version >= version) {
          throw new Rejection(
            "invalid",
            "",
            `label version ${op.version} is not below the entry's index ${version}`,
            0,
          );
        }
        const staged = o.labels.get(op.name);
        const stored = (await this.kv.get<StoredLabel>(this.#label(op.name))).value;
        const exists = o.labels.has(op.name)
          ? staged !== null
          : stored !== null && stored.index !== version;
        if (exists) {
          throw new Rejection(
            "label-exists",
            "",
            `label ${JSON.stringify(op.name)} exists already`,
            staged?.version ?? stored?.version ?? 0,
          );
        }
        o.labels.set(op.name, { version: op.version || version - 1, time, index: version });
        return;
      }
      case "unlabel":
        o.labels.set(op.name, null);
        return;
      case "prune":
      case "stage":
      case "commit-batch":
        throw new Rejection("invalid", "", `a ${op.op} must be the only op of its command`, 0);
      case "put":
      case "mkdir": {
        this.#validPath(op.path);
        const cur = await this.#expect(op.path, op.base, o);
        if (op.op === "put" && cur && !cur.deleted && cur.kind === "dir") {
          await this.#expectEmpty(op.path, o);
        }
        await this.#ensureParents(op.path, op.mtime, base, o);
        await this.#noCaseTwin(op.path, o);
        if (op.op === "put") {
          o.set({
            path: op.path,
            ...base,
            kind: op.kind,
            root: op.root,
            size: op.size,
            mode: syncedMode(op.mode),
            mtime: op.mtime,
            ...(op.kind === "symlink" ? { target: op.target } : {}),
          });
        } else {
          o.set({ path: op.path, ...base, ...dirFields(syncedMode(op.mode), op.mtime) });
        }
        return;
      }
      case "delete": {
        this.#validPath(op.path);
        const cur = await this.#expect(op.path, op.base, o);
        if (!cur || cur.deleted) {
          throw new Rejection("not-found", op.path, `${op.path} does not exist`, cur?.version ?? 0);
        }
        if (cur.kind === "dir") await this.#expectEmpty(op.path, o);
        o.set({ ...cur, ...base, deleted: true });
        return;
      }
      case "rename": {
        this.#validPath(op.from);
        this.#validPath(op.to);
        if (op.from === op.to || op.to.startsWith(`${op.from}/`)) {
          throw new Rejection(
            "invalid",
            op.to,
            "cannot rename a path onto itself or below itself",
            0,
          );
        }
        const from = await this.#expect(op.from, op.fromBase, o);
        if (!from || from.deleted) {
          throw new Rejection(
            "not-found",
            op.from,
            `${op.from} does not exist`,
            from?.version ?? 0,
          );
        }
        if (from.kind === "dir") await this.#expectEmpty(op.from, o);
        const to = await this.#expect(op.to, op.toBase, o);
        if (to && !to.deleted && to.kind === "dir") await this.#expectEmpty(op.to, o);
        o.set({ ...from, ...base, deleted: true });
        await this.#ensureParents(op.to, from.mtime, base, o);
        await this.#noCaseTwin(op.to, o);
        o.set({ ...from, ...base, path: op.to });
        return;
      }
    }
  }

  #validPath(path: string): void {
    const problem = indexPathProblem(path);
    if (problem) {
      throw new Rejection("invalid", path, `invalid path ${JSON.stringify(path)}: ${problem}`, 0);
    }
  }

  /** The current record, after checking that `base` matches it (0 = absent or deleted). */
  async #expect(path: string, base: number, o: Overlay): Promise<IndexRecord | null> {
    const cur = await o.get(path);
    const live = cur && !cur.deleted ? cur.version : 0;
    const ok = base === 0 ? live === 0 : cur !== null && cur.version === base;
    if (!ok) {
      throw new Rejection(
        "conflict",
        path,
        `${path} is at version ${cur?.version ?? 0}${
          cur?.deleted ? " (deleted)" : ""
        }, not ${base}`,
        cur?.version ?? 0,
      );
    }
    return cur;
  }

  /** Every ancestor must be a directory; absent ones are created. */
  async #ensureParents(
    path: string,
    mtime: number,
    base: { version: number; origin: string; deleted: boolean; committedAt: number },
    o: Overlay,
  ): Promise<void> {
    for (const dir of ancestors(path)) {
      const cur = await o.get(dir);
      if (cur && !cur.deleted) {
        if (cur.kind !== "dir") {
          throw new Rejection(
            "not-a-directory",
            dir,
            `${dir} is a ${cur.kind}, not a directory`,
            cur.version,
          );
        }
        continue;
      }
      await this.#noCaseTwin(dir, o);
      o.set({ path: dir, ...base, ...dirFields(0o755, mtime) });
    }
  }

  /**
   * Read, in a few concurrent batches, every head and case-fold entry the ops of a command
   * will look at (their paths and ancestors), into the overlay's caches. Checked one op at a
   * time, a command of 64 file ops made some 200 reads in a row; on a member busy writing
   * files, whose KV thread had its own commits queued, one entry then took up to 200 ms to
   * apply, and a joining member caught up with the log slower than it could write the files.
   * The same values are read, so the outcome is the same.
   */
  async #prime(ops: readonly Op[], o: Overlay): Promise<void> {
    const paths = new Set<string>();
    for (const op of ops) {
      const named = op.op === "put" || op.op === "mkdir" || op.op === "delete"
        ? [op.path]
        : op.op === "rename"
        ? [op.from, op.to]
        : [];
      for (const path of named) {
        if (indexPathProblem(path)) continue; // rejected by #check before any read
        paths.add(path);
        for (const dir of ancestors(path)) paths.add(dir);
      }
    }
    const heads = [...paths].filter((p) => !o.before.has(p) && !o.changed.has(p));
    const folds = [...new Set([...paths].map(caseFold))].filter((f) => !o.folds.has(f));
    const reads: (() => Promise<void>)[] = [];
    for (let i = 0; i < heads.length; i += KV_GET_MANY) {
      const part = heads.slice(i, i + KV_GET_MANY);
      reads.push(async () => {
        const es = await this.kv.getMany<StoredRecord[]>(part.map((p) => this.#rec(p)));
        part.forEach((p, j) => o.before.set(p, es[j].value ? toRecord(p, es[j].value) : null));
      });
    }
    for (let i = 0; i < folds.length; i += KV_GET_MANY) {
      const part = folds.slice(i, i + KV_GET_MANY);
      reads.push(async () => {
        const es = await this.kv.getMany<string[]>(part.map((f) => this.#foldKey(f)));
        part.forEach((f, j) => o.folds.set(f, es[j].value));
      });
    }
    // A batch that fails (a key too long for a KV read, say) is simply not cached: the checks
    // then read one by one as before, and reject the command as before.
    await mapLimit(reads, PRIME_READS_AT_ONCE, (read) => read().catch(() => {}));
  }

  /** No other live path may differ from `path` only in case. */
  async #noCaseTwin(path: string, o: Overlay): Promise<void> {
    const fold = caseFold(path);
    for (const other of o.byFold.get(fold) ?? []) {
      if (other !== path && !o.changed.get(other)!.deleted) {
        throw new Rejection("case-conflict", path, `${path} differs only in case from ${other}`, 0);
      }
    }
    const twin = o.folds.has(fold)
      ? o.folds.get(fold)!
      : (await this.kv.get<string>(this.#foldKey(fold))).value;
    if (twin && twin !== path) {
      const cur = await o.get(twin);
      if (cur && !cur.deleted) {
        throw new Rejection(
          "case-conflict",
          path,
          `${path} differs only in case from ${twin}`,
          cur.version,
        );
      }
    }
  }

  /**
   * A directory being removed or replaced must have no live entry below it. In the overlay a
   * live direct child suffices: every live entry's ancestors are live directories.
   */
  async #expectEmpty(dir: string, o: Overlay): Promise<void> {
    for await (const rec of this.#heads(dir)) {
      const cur = o.changed.get(rec.path) ?? rec;
      if (!cur.deleted) {
        throw new Rejection("not-empty", dir, `${dir} is not empty (${cur.path})`, rec.version);
      }
    }
    for (const kid of o.liveKids.get(dir) ?? []) {
      throw new Rejection("not-empty", dir, `${dir} is not empty (${kid})`, changedVersion(o, kid));
    }
  }

  /**
   * The whole state (heads with tombstones, retained history, commit times, labels, metadata,
   * applied index) as bytes, for Raft snapshots.
   */
  async snapshot(): Promise<Uint8Array> {
    const applied = await this.applied();
    const records: IndexRecord[] = [];
    const headVersion = new Map<string, number>();
    for await (const r of this.list({ tombstones: true, at: applied })) {
      records.push(r);
      headVersion.set(r.path, r.version);
    }
    const history: IndexRecord[] = [];
    for await (const e of this.kv.list<StoredRecord>({ prefix: [...this.prefix, "hist"] })) {
      const path = e.key[e.key.length - 2] as string;
      const v = e.value.version;
      if (v <= applied && headVersion.get(path) !== v) history.push(toRecord(path, e.value));
    }
    const times: { version: number; time: number }[] = [];
    const timeIter = this.kv.list<number>({
      prefix: [...this.prefix, "time"],
      end: this.#time(applied + 1),
    });
    for await (const e of timeIter) {
      times.push({ version: e.key[e.key.length - 1] as number, time: e.value });
    }
    const peers = [...(await this.peers())].map(([peerId, addrs]) => ({ peerId, addrs }));
    const usedInvites: string[] = [];
    for await (const e of this.kv.list({ prefix: [...this.prefix, "used"] })) {
      usedInvites.push(e.key[e.key.length - 1] as string);
    }
    const labels: IndexSnapshot["labels"] = [];
    for await (const e of this.kv.list<StoredLabel>({ prefix: [...this.prefix, "label"] })) {
      labels.push({ name: e.key[e.key.length - 1] as string, ...e.value });
    }
    const horizon = await this.horizon();
    return encodeSnapshot({
      applied,
      peers,
      usedInvites,
      records,
      history,
      times,
      labels,
      horizon,
      batches: await this.#stagedSnapshot(applied),
    });
  }

  /** Staged parts (whole, staged at or below `applied`), stage-at and stage-done. */
  async #stagedSnapshot(applied: number): Promise<IndexSnapshot["batches"]> {
    const out: IndexSnapshot["batches"] = { parts: [], started: [], done: [] };
    let last = "";
    for await (const e of this.kv.list({ prefix: [...this.prefix, "stage"] })) {
      const [batch, part] = e.key.slice(-3, -1) as [string, number];
      const id = JSON.stringify([batch, part]);
      if (id === last) continue;
      last = id;
      const stored = await this.#readPart(batch, part, applied);
      if (stored) out.parts.push({ batch, part, ...stored });
    }
    const started = this.kv.list<StoredStageAt>({ prefix: [...this.prefix, "stage-at"] });
    for await (const e of started) {
      if (e.value.index > applied) continue;
      out.started.push({ batch: e.key[e.key.length - 1] as string, ...e.value });
    }
    for await (const e of this.kv.list<number>({ prefix: [...this.prefix, "stage-done"] })) {
      if (e.value > applied) continue;
      out.done.push({ batch: e.key[e.key.length - 1] as string, index: e.value });
    }
    return out;
  }

  /**
   * Replace the state with a snapshot's. The applied index is cleared first and written last,
   * so a crash half-way leaves applied = 0 and Raft restores the snapshot again. Writes are
   * split into commits within Deno KV's limits.
   */
  async restore(data: Uint8Array): Promise<void> {
    const snap = decodeSnapshot(data);
    this.#generation++;
    await this.kv.delete(this.#appliedKey);
    const batches = this.#batches();
    for (
      const part of [
        "rec",
        "fold",
        "hist",
        "ver",
        "time",
        "label",
        "peer",
        "used",
        "hist-ready",
        "horizon",
        "stage",
        "stage-at",
        "stage-done",
      ]
    ) {
      const keys = this.kv.list({ prefix: [...this.prefix, part] });
      for await (const e of keys) await batches.add({ key: e.key });
    }
    await batches.add({ key: this.#histReadyKey });
    await batches.flush();
    for (const { path, ...stored } of snap.records) {
      const group: Mutation[] = [
        { key: this.#rec(path), value: stored },
        { key: this.#hist(path, stored.version), value: stored },
        { key: this.#ver(stored.version, path), value: true },
      ];
      if (!stored.deleted) group.push({ key: this.#foldKey(caseFold(path)), value: path });
      await batches.add(...group);
    }
    for (const { path, ...stored } of snap.history) {
      await batches.add(
        { key: this.#hist(path, stored.version), value: stored },
        { key: this.#ver(stored.version, path), value: true },
      );
    }
    for (const t of snap.times) await batches.add({ key: this.#time(t.version), value: t.time });
    for (const { name, ...value } of snap.labels) {
      await batches.add({ key: this.#label(name), value: value satisfies StoredLabel });
    }
    for (const p of snap.peers) await batches.add({ key: this.#peer(p.peerId), value: p.addrs });
    for (const id of snap.usedInvites) {
      await batches.add({ key: this.#used(id), value: snap.applied });
    }
    await batches.add({ key: this.#histReadyKey, value: true });
    if (snap.horizon > 0) await batches.add({ key: this.#horizonKey, value: snap.horizon });
    for (const p of snap.batches.parts) {
      for (const m of this.#chunkMutations(p.batch, p.part, p.index, p.bytes)) await batches.add(m);
    }
    for (const { batch, time, index } of snap.batches.started) {
      await batches.add({ key: this.#stageAt(batch), value: { time, index } });
    }
    for (const { batch, index } of snap.batches.done) {
      await batches.add({ key: this.#stageDone(batch), value: index });
    }
    await batches.flush();
    await this.kv.set(this.#appliedKey, snap.applied);
    this.#histReady = true;
    this.#clean = true;
    this.#generation++;
  }
}

function changedVersion(o: Overlay, path: string): number {
  return o.changed.get(path)?.version ?? 0;
}

function dirFields(mode: number, mtime: number): {
  kind: "dir";
  root: Hash;
  size: number;
  mode: number;
  mtime: number;
} {
  return { kind: "dir", root: EMPTY_FILE_ROOT, size: 0, mode, mtime };
}

/**
 * The permission bits the index keeps: setuid and setgid are dropped. Content comes from any
 * member or invite holder, and a node or a pull running as root would otherwise write a
 * setuid binary someone else chose. The sticky bit and rwx bits are kept.
 */
export function syncedMode(mode: number): number {
  return mode & 0o1777;
}
