/**
 * The in-memory Raft log of one node: the entries after the last compaction point, what of them
 * is durable, committed and handed out for applying, and the membership each conf-change entry
 * produces.
 *
 * The whole uncompacted log lives in memory (compaction keeps it short), so the core never has
 * to read storage: that keeps it pure and synchronous.
 */
import { applyConfChange, decodeConfChange } from "./config.ts";
import { type Entry, EntryType, type MembershipConfig, RaftError, type Snapshot } from "./types.ts";

/** Rough wire size of an entry, used for message and ready size limits. */
export function entrySize(e: Entry): number {
  return e.data.length + 24;
}

interface ConfigAt {
  readonly index: number;
  readonly config: MembershipConfig;
}

export class RaftLog {
  /** Index of the last compacted entry; the log holds `offset + 1 ..= lastIndex()`. */
  offset: number;
  offsetTerm: number;
  entries: Entry[];
  committed: number;
  /** Highest index handed out for applying (or restored from a snapshot). */
  applied: number;
  /** Highest index known durable. Entries after it are handed out in the next ready. */
  stable: number;
  /** Latest snapshot (local or received), the one sent to lagging followers. */
  snapshot: Snapshot | null;
  /** A snapshot received from the leader and not yet handed out in a ready. */
  pendingSnapshot: Snapshot | null = null;
  /**
   * Membership history: the first element is the configuration as of `offset` (or earlier),
   * then one element per conf-change entry in the log. The configuration in force is the last
   * one: as in the Raft dissertation, a change takes effect as soon as it is in the log.
   */
  #configs: ConfigAt[];

  constructor(
    offset: number,
    offsetTerm: number,
    offsetConfig: MembershipConfig,
    entries: readonly Entry[],
    committed: number,
    snapshot: Snapshot | null,
  ) {
    this.offset = offset;
    this.offsetTerm = offsetTerm;
    this.entries = [];
    this.#configs = [{ index: offset, config: offsetConfig }];
    this.snapshot = snapshot;
    let expect = offset + 1;
    for (const e of entries) {
      if (e.index !== expect) {
        throw new RaftError("InvalidState", `log: entry ${e.index} where ${expect} was expected`);
      }
      this.#push(e);
      expect++;
    }
    const applied = snapshot ? Math.max(snapshot.meta.index, offset) : offset;
    this.committed = Math.max(applied, Math.min(committed, this.lastIndex()));
    this.applied = applied;
    this.stable = this.lastIndex();
  }

  firstIndex(): number {
    return this.offset + 1;
  }

  lastIndex(): number {
    return this.offset + this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length ? this.entries[this.entries.length - 1].term : this.offsetTerm;
  }

  /** Term of entry `i`, or undefined if it is compacted away or beyond the end. */
  term(i: number): number | undefined {
    if (i === this.offset) return this.offsetTerm;
    if (i < this.offset || i > this.lastIndex()) return undefined;
    return this.entries[i - this.offset - 1].term;
  }

  entry(i: number): Entry | undefined {
    if (i <= this.offset || i > this.lastIndex()) return undefined;
    return this.entries[i - this.offset - 1];
  }

  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t;
  }

  /** Raft §5.4.1: is a log ending at (index, term) at least as up to date as ours? */
  isUpToDate(index: number, term: number): boolean {
    const lt = this.lastTerm();
    return term > lt || (term === lt && index >= this.lastIndex());
  }

  config(): MembershipConfig {
    return this.#configs[this.#configs.length - 1].config;
  }

  /** Index of the entry that produced the configuration in force. */
  configIndex(): number {
    return this.#configs[this.#configs.length - 1].index;
  }

  configAt(index: number): MembershipConfig {
    for (let k = this.#configs.length - 1; k >= 0; k--) {
      if (this.#configs[k].index <= index) return this.#configs[k].config;
    }
    throw new RaftError("InvalidState", `log: no configuration known at ${index}`);
  }

  #push(e: Entry): void {
    this.entries.push(e);
    if (e.type === EntryType.ConfChange) {
      let next = this.config();
      try {
        next = applyConfChange(next, decodeConfChange(e.data));
      } catch {
        // An undecodable change is skipped identically on every node.
      }
      this.#configs.push({ index: e.index, config: next });
    }
  }

  /** Leader: append new entries right after the last one. */
  append(entries: readonly Entry[]): void {
    for (const e of entries) {
      if (e.index !== this.lastIndex() + 1) {
        throw new RaftError("InvalidState", `log: append ${e.index} after ${this.lastIndex()}`);
      }
      this.#push(e);
    }
  }

  /** Follower: index of the first entry that conflicts with ours or is new; 0 if none. */
  findConflict(entries: readonly Entry[]): number {
    for (const e of entries) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * The largest index <= `index` whose term is <= `term` (etcd's fast backtracking: one round
   * trip skips a whole term of conflicting entries). Returns [index, term of that index].
   */
  findConflictByTerm(index: number, term: number): [number, number] {
    if (index > this.lastIndex()) return [index, 0];
    for (let i = index; i > this.offset; i--) {
      const t = this.term(i)!;
      if (t <= term) return [i, t];
    }
    return [this.offset, this.offsetTerm];
  }

  /**
   * Follower: accept entries after (prevIndex, prevTerm). Returns the index of the last entry
   * the leader's message vouches for, or null if our log does not contain (prevIndex, prevTerm).
   */
  maybeAppend(
    prevIndex: number,
    prevTerm: number,
    leaderCommit: number,
    entries: readonly Entry[],
  ): number | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNew = prevIndex + entries.length;
    const ci = this.findConflict(entries);
    if (ci !== 0) {
      if (ci <= this.committed) {
        throw new RaftError(
          "InvalidState",
          `log: entry ${ci} conflicts with committed entries (committed ${this.committed})`,
        );
      }
      this.truncateAndAppend(entries.slice(ci - (prevIndex + 1)));
    }
    this.commitTo(Math.min(leaderCommit, lastNew));
    return lastNew;
  }

  /** Drop every entry from `entries[0].index` on and append `entries`. */
  truncateAndAppend(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0].index;
    if (first <= this.offset || first > this.lastIndex() + 1) {
      throw new RaftError("InvalidState", `log: cannot truncate at ${first}`);
    }
    this.entries.length = first - this.offset - 1;
    while (this.#configs.length > 1 && this.#configs[this.#configs.length - 1].index >= first) {
      this.#configs.pop();
    }
    this.stable = Math.min(this.stable, first - 1);
    this.append(entries);
  }

  commitTo(i: number): boolean {
    if (i <= this.committed) return false;
    if (i > this.lastIndex()) {
      throw new RaftError("InvalidState", `log: commit ${i} beyond last index ${this.lastIndex()}`);
    }
    this.committed = i;
    return true;
  }

  /** Entries in [lo, hi), at most `maxBytes` worth but always at least one if any. */
  slice(lo: number, hi: number, maxBytes = Infinity): Entry[] {
    lo = Math.max(lo, this.offset + 1);
    hi = Math.min(hi, this.lastIndex() + 1);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entries[i - this.offset - 1];
      bytes += entrySize(e);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  unstableEntries(): Entry[] {
    return this.entries.slice(this.stable - this.offset);
  }

  /** Committed entries not yet handed out for applying. */
  nextCommitted(maxBytes: number): Entry[] {
    return this.slice(this.applied + 1, this.committed + 1, maxBytes);
  }

  stableTo(index: number, term: number): void {
    if (this.matchTerm(index, term) && index > this.stable) this.stable = index;
  }

  appliedTo(index: number): void {
    if (index > this.applied) this.applied = Math.min(index, this.committed);
  }

  /** Replace the whole log with a snapshot received from the leader. */
  restore(snap: Snapshot): void {
    this.entries = [];
    this.offset = snap.meta.index;
    this.offsetTerm = snap.meta.term;
    this.#configs = [{ index: snap.meta.index, config: snap.meta.config }];
    this.committed = snap.meta.index;
    this.applied = snap.meta.index;
    this.stable = snap.meta.index;
    this.snapshot = snap;
    this.pendingSnapshot = snap;
  }

  /** Drop entries up to `index` (which must be applied). */
  compact(index: number): void {
    if (index <= this.offset) return;
    if (index > this.applied) {
      throw new RaftError("InvalidState", `log: compact ${index} beyond applied ${this.applied}`);
    }
    const config = this.configAt(index);
    this.offsetTerm = this.term(index)!;
    this.entries = this.entries.slice(index - this.offset);
    this.offset = index;
    this.#configs = [
      { index, config },
      ...this.#configs.filter((c) => c.index > index),
    ];
  }
}
