/**
 * Durable Raft state: hard state, log entries, the compaction point and the latest snapshot.
 *
 * The driver calls `save()` once per ready, before sending that ready's messages, and
 * `compact()` after taking a local snapshot. `load()` returns exactly what a restarted core
 * needs. Two implementations: {@link MemoryStorage} (tests, simulation) and
 * {@link KvRaftStorage} (Deno KV on disk).
 */
import { concatBytes } from "../wire/mod.ts";
import type { Compaction } from "./core.ts";
import {
  type Entry,
  EntryType,
  type HardState,
  type MembershipConfig,
  type PersistedState,
  RaftError,
  type Snapshot,
  type SnapshotMeta,
} from "./types.ts";

/** The durable part of one ready. */
export interface StorageUpdate {
  readonly hardState: HardState | null;
  /** A snapshot from the leader: it replaces the whole log. Applied before `entries`. */
  readonly snapshot: Snapshot | null;
  /** A contiguous run; stored entries from `entries[0].index` on are replaced. */
  readonly entries: readonly Entry[];
}

export interface RaftStorage {
  load(): Promise<PersistedState>;
  save(update: StorageUpdate): Promise<void>;
  compact(compaction: Compaction): Promise<void>;
}

const EMPTY: MembershipConfig = { voters: [], learners: [] };

/**
 * Storage in memory. "Durable" means surviving a simulated crash: the simulation drops the core
 * and keeps this object. Synchronous methods are exposed for the deterministic simulation.
 */
export class MemoryStorage implements RaftStorage {
  #hs: HardState = { term: 0, vote: "", commit: 0 };
  #snapshot: Snapshot | null = null;
  #offset = 0;
  #offsetTerm = 0;
  #offsetConfig: MembershipConfig = EMPTY;
  #entries: Entry[] = [];

  constructor(initial?: PersistedState) {
    if (initial) {
      this.#hs = initial.hardState;
      this.#snapshot = initial.snapshot;
      this.#offset = initial.offset;
      this.#offsetTerm = initial.offsetTerm;
      this.#offsetConfig = initial.offsetConfig;
      this.#entries = [...initial.entries];
    }
  }

  loadSync(): PersistedState {
    return {
      hardState: this.#hs,
      snapshot: this.#snapshot,
      offset: this.#offset,
      offsetTerm: this.#offsetTerm,
      offsetConfig: this.#offsetConfig,
      entries: [...this.#entries],
    };
  }

  saveSync(u: StorageUpdate): void {
    if (u.snapshot) {
      const m = u.snapshot.meta;
      this.#snapshot = u.snapshot;
      this.#offset = m.index;
      this.#offsetTerm = m.term;
      this.#offsetConfig = m.config;
      this.#entries = [];
    }
    if (u.entries.length) {
      const first = u.entries[0].index;
      const last = this.#offset + this.#entries.length;
      if (first <= this.#offset || first > last + 1) {
        throw new RaftError(
          "InvalidState",
          `storage: entries at ${first} leave a gap or overwrite the compacted log`,
        );
      }
      this.#entries.length = first - this.#offset - 1;
      this.#entries.push(...u.entries);
    }
    if (u.hardState) this.#hs = u.hardState;
  }

  compactSync(c: Compaction): void {
    if (!this.#snapshot || this.#snapshot.meta.index < c.snapshot.meta.index) {
      this.#snapshot = c.snapshot;
    }
    if (c.offset <= this.#offset) return;
    const last = this.#offset + this.#entries.length;
    if (c.offset > last) {
      throw new RaftError("InvalidState", `storage: compaction to ${c.offset} beyond last ${last}`);
    }
    this.#entries = this.#entries.slice(c.offset - this.#offset);
    this.#offset = c.offset;
    this.#offsetTerm = c.offsetTerm;
    this.#offsetConfig = c.offsetConfig;
  }

  load(): Promise<PersistedState> {
    return Promise.resolve(this.loadSync());
  }
  save(update: StorageUpdate): Promise<void> {
    this.saveSync(update);
    return Promise.resolve();
  }
  compact(compaction: Compaction): Promise<void> {
    this.compactSync(compaction);
    return Promise.resolve();
  }
}

// ---- Deno KV --------------------------------------------------------------------------------

/** Bytes of data per KV value; Deno KV caps a serialized value at 64 KiB. */
const PIECE = 60_000;
/** Per-transaction budgets, under Deno KV's 1,000 mutations and 800 KiB per atomic commit. */
const MAX_MUTATIONS = 900;
const MAX_BYTES = 640_000;

interface StoredEntry {
  t: number;
  y: number;
  /** Data inline when small enough, else `n` pieces under the "ep" prefix. */
  d?: Uint8Array;
  n?: number;
}

interface StoredSnapshot {
  index: number;
  term: number;
  voters: string[];
  learners: string[];
  size: number;
  parts: number;
  /** Unique per snapshot written: pieces live under a fresh id, so a half-written snapshot is
   * never mistaken for the current one. */
  id: number;
}

interface StoredBounds {
  offset: number;
  offsetTerm: number;
  voters: string[];
  learners: string[];
  snap: StoredSnapshot | null;
}

type Mutation =
  | { kind: "set"; key: Deno.KvKey; value: unknown; size: number }
  | { kind: "delete"; key: Deno.KvKey; size: number };

/**
 * Raft storage in Deno KV under a key prefix.
 *
 * Crash safety: a ready that fits Deno KV's per-transaction limits is one atomic commit. A
 * larger one is split into several commits ordered so that any prefix of them, read back by
 * `load()`, is a state the core may safely restart from:
 *   1. snapshot pieces under a fresh id (invisible until the bounds point at them);
 *   2. superseded entries, deleted from the highest index down (they are never committed, and
 *      deleting top-down never leaves a hole in the log);
 *   3. new entries, lowest index first, each entry's pieces before its header;
 *   4. hard state and bounds together, last (with a snapshot: before the new entries, so
 *      stale entries never appear to follow it);
 *   5. garbage: compacted entries and old snapshot pieces.
 * `load()` reads only the contiguous run after the bounds' offset and removes anything else.
 */
export class KvRaftStorage implements RaftStorage {
  readonly #kv: Deno.Kv;
  readonly #prefix: Deno.KvKey;
  #loaded = false;
  #offset = 0;
  #last = 0;
  #bounds: StoredBounds = { offset: 0, offsetTerm: 0, voters: [], learners: [], snap: null };
  /** Piece counts of stored entries whose data did not fit inline. */
  #pieces = new Map<number, number>();
  readonly #prefixSize: number;

  constructor(kv: Deno.Kv, prefix: Deno.KvKey) {
    this.#kv = kv;
    this.#prefix = prefix;
    this.#prefixSize = JSON.stringify(prefix).length + 8;
  }

  #k(...parts: Deno.KvKeyPart[]): Deno.KvKey {
    return [...this.#prefix, ...parts];
  }

  async load(): Promise<PersistedState> {
    const hsRes = await this.#kv.get<HardState>(this.#k("hs"));
    const bRes = await this.#kv.get<StoredBounds>(this.#k("bounds"));
    const hs = hsRes.value ?? { term: 0, vote: "", commit: 0 };
    const b = bRes.value ?? { offset: 0, offsetTerm: 0, voters: [], learners: [], snap: null };
    this.#bounds = b;
    this.#offset = b.offset;
    const garbage: Mutation[] = [];

    // Entries: keep the contiguous run after the offset; everything else is garbage.
    const headers = new Map<number, StoredEntry>();
    for await (const r of this.#kv.list<StoredEntry>({ prefix: this.#k("e") })) {
      headers.set(r.key[r.key.length - 1] as number, r.value);
    }
    const entries: Entry[] = [];
    this.#pieces = new Map();
    let i = b.offset + 1;
    for (; headers.has(i); i++) {
      const h = headers.get(i)!;
      let data: Uint8Array;
      if (h.d) data = h.d;
      else {
        const parts: Uint8Array[] = [];
        for (let k = 0; k < (h.n ?? 0); k++) {
          const p = await this.#kv.get<Uint8Array>(this.#k("ep", i, k));
          if (!p.value) throw new RaftError("InvalidState", `storage: entry ${i} lost piece ${k}`);
          parts.push(p.value);
        }
        data = concatBytes(parts);
        this.#pieces.set(i, h.n ?? 0);
      }
      entries.push({ index: i, term: h.t, type: h.y as EntryType, data });
    }
    this.#last = i - 1;
    for (const idx of headers.keys()) {
      if (idx <= b.offset || idx > this.#last) garbage.push(this.#del(this.#k("e", idx)));
    }
    for await (const r of this.#kv.list({ prefix: this.#k("ep") })) {
      const idx = r.key[r.key.length - 2] as number;
      if (idx <= b.offset || idx > this.#last) garbage.push(this.#del(r.key));
    }

    // Snapshot: the one the bounds name; pieces of any other id are garbage.
    let snapshot: Snapshot | null = null;
    if (b.snap) {
      const parts: Uint8Array[] = [];
      for (let k = 0; k < b.snap.parts; k++) {
        const p = await this.#kv.get<Uint8Array>(this.#k("sd", b.snap.id, k));
        if (!p.value) throw new RaftError("InvalidState", `storage: snapshot lost piece ${k}`);
        parts.push(p.value);
      }
      snapshot = { meta: metaOf(b.snap), data: concatBytes(parts) };
    }
    for await (const r of this.#kv.list({ prefix: this.#k("sd") })) {
      if (r.key[r.key.length - 2] !== b.snap?.id) garbage.push(this.#del(r.key));
    }
    await this.#commitAll([garbage]);
    this.#loaded = true;
    return {
      hardState: hs,
      snapshot,
      offset: b.offset,
      offsetTerm: b.offsetTerm,
      offsetConfig: { voters: b.voters, learners: b.learners },
      entries,
    };
  }

  async save(u: StorageUpdate): Promise<void> {
    this.#mustBeLoaded();
    const snapWrites: Mutation[] = [];
    const staleDeletes: Mutation[] = [];
    const entryWrites: Mutation[] = [];
    const final: Mutation[] = [];
    const garbage: Mutation[] = [];
    let offset = this.#offset;
    let last = this.#last;
    const pieces = new Map(this.#pieces);
    let bounds = this.#bounds;

    if (u.snapshot) {
      const m = u.snapshot.meta;
      const stored = this.#snapshotWrites(u.snapshot, snapWrites);
      // Everything after the snapshot is stale; everything up to it becomes garbage.
      for (let i = last; i > Math.max(m.index, offset); i--) {
        this.#entryDeletes(i, pieces, staleDeletes);
      }
      for (let i = offset + 1; i <= Math.min(m.index, last); i++) {
        this.#entryDeletes(i, pieces, garbage);
      }
      if (bounds.snap) this.#snapshotDeletes(bounds.snap, garbage);
      bounds = {
        offset: m.index,
        offsetTerm: m.term,
        voters: [...m.config.voters],
        learners: [...m.config.learners],
        snap: stored,
      };
      final.push(this.#set(this.#k("bounds"), bounds, 256 + 64 * (bounds.voters.length + 2)));
      offset = m.index;
      last = m.index;
    }
    if (u.entries.length) {
      const first = u.entries[0].index;
      if (first <= offset || first > last + 1) {
        throw new RaftError(
          "InvalidState",
          `storage: entries at ${first} leave a gap (last ${last})`,
        );
      }
      for (let i = last; i >= first; i--) this.#entryDeletes(i, pieces, staleDeletes);
      for (const e of u.entries) this.#entryWrites(e, pieces, entryWrites);
      last = u.entries[u.entries.length - 1].index;
    }
    if (u.hardState) final.push(this.#set(this.#k("hs"), { ...u.hardState }, 128));

    const groups = u.snapshot
      ? [snapWrites, staleDeletes, final, entryWrites, garbage]
      : [staleDeletes, entryWrites, final];
    await this.#commitAll(groups);
    this.#offset = offset;
    this.#last = last;
    this.#pieces = pieces;
    this.#bounds = bounds;
  }

  async compact(c: Compaction): Promise<void> {
    this.#mustBeLoaded();
    const snapWrites: Mutation[] = [];
    const final: Mutation[] = [];
    const garbage: Mutation[] = [];
    const pieces = new Map(this.#pieces);
    let bounds = this.#bounds;
    let offset = this.#offset;
    const newSnap = !bounds.snap || bounds.snap.index < c.snapshot.meta.index;
    const newOffset = c.offset > this.#offset;
    if (!newSnap && !newOffset) return;
    if (c.offset > this.#last) {
      throw new RaftError(
        "InvalidState",
        `storage: compaction to ${c.offset} beyond last ${this.#last}`,
      );
    }
    let snap = bounds.snap;
    if (newSnap) {
      snap = this.#snapshotWrites(c.snapshot, snapWrites);
      if (bounds.snap) this.#snapshotDeletes(bounds.snap, garbage);
    }
    if (newOffset) {
      for (let i = this.#offset + 1; i <= c.offset; i++) this.#entryDeletes(i, pieces, garbage);
      offset = c.offset;
      bounds = {
        offset: c.offset,
        offsetTerm: c.offsetTerm,
        voters: [...c.offsetConfig.voters],
        learners: [...c.offsetConfig.learners],
        snap,
      };
    } else {
      bounds = { ...bounds, snap };
    }
    final.push(this.#set(this.#k("bounds"), bounds, 256 + 64 * (bounds.voters.length + 2)));
    await this.#commitAll([snapWrites, final, garbage]);
    this.#bounds = bounds;
    this.#offset = offset;
    this.#pieces = pieces;
  }

  #mustBeLoaded(): void {
    if (!this.#loaded) throw new RaftError("InvalidState", "storage: call load() first");
  }

  #set(key: Deno.KvKey, value: unknown, size: number): Mutation {
    return { kind: "set", key, value, size: size + this.#prefixSize };
  }

  #del(key: Deno.KvKey): Mutation {
    return { kind: "delete", key, size: this.#prefixSize };
  }

  #entryDeletes(i: number, pieces: Map<number, number>, out: Mutation[]): void {
    out.push(this.#del(this.#k("e", i)));
    const n = pieces.get(i) ?? 0;
    for (let k = 0; k < n; k++) out.push(this.#del(this.#k("ep", i, k)));
    pieces.delete(i);
  }

  #entryWrites(e: Entry, pieces: Map<number, number>, out: Mutation[]): void {
    if (e.data.length <= PIECE) {
      out.push(
        this.#set(this.#k("e", e.index), { t: e.term, y: e.type, d: e.data }, e.data.length + 48),
      );
      return;
    }
    const n = Math.ceil(e.data.length / PIECE);
    for (let k = 0; k < n; k++) {
      const p = e.data.subarray(k * PIECE, (k + 1) * PIECE);
      out.push(this.#set(this.#k("ep", e.index, k), p, p.length + 16));
    }
    out.push(this.#set(this.#k("e", e.index), { t: e.term, y: e.type, n }, 48));
    pieces.set(e.index, n);
  }

  #snapshotWrites(s: Snapshot, out: Mutation[]): StoredSnapshot {
    // load() removed every piece not of the current snapshot, so the next id is free.
    const id = (this.#bounds.snap?.id ?? 0) + 1;
    const parts = Math.ceil(s.data.length / PIECE);
    for (let k = 0; k < parts; k++) {
      const p = s.data.subarray(k * PIECE, (k + 1) * PIECE);
      out.push(this.#set(this.#k("sd", id, k), p, p.length + 16));
    }
    return {
      index: s.meta.index,
      term: s.meta.term,
      voters: [...s.meta.config.voters],
      learners: [...s.meta.config.learners],
      size: s.data.length,
      parts,
      id,
    };
  }

  #snapshotDeletes(s: StoredSnapshot, out: Mutation[]): void {
    for (let k = 0; k < s.parts; k++) out.push(this.#del(this.#k("sd", s.id, k)));
  }

  /**
   * Commit groups of mutations in order, in as few atomic operations as the limits allow. A
   * split inside one entry's writes is harmless: its header is written after its pieces, and
   * pieces without a header are garbage to `load()`.
   */
  async #commitAll(groups: readonly Mutation[][]): Promise<void> {
    let op = this.#kv.atomic();
    let count = 0;
    let bytes = 0;
    const flush = async () => {
      if (count === 0) return;
      const r = await op.commit();
      if (!r.ok) throw new RaftError("InvalidState", "storage: atomic commit failed");
      op = this.#kv.atomic();
      count = 0;
      bytes = 0;
    };
    for (const g of groups) {
      for (const m of g) {
        if (count + 1 > MAX_MUTATIONS || bytes + m.size > MAX_BYTES) await flush();
        if (m.kind === "set") op.set(m.key, m.value);
        else op.delete(m.key);
        count++;
        bytes += m.size;
      }
    }
    await flush();
  }
}

function metaOf(s: StoredSnapshot): SnapshotMeta {
  return { index: s.index, term: s.term, config: { voters: s.voters, learners: s.learners } };
}
