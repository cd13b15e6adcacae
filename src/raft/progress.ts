/**
 * What a leader knows about one follower's log, and the flow control that decides what to send
 * it next (etcd-io/raft's tracker.Progress):
 *
 * - probe: we do not know where its log matches ours; send one append at a time and wait.
 * - replicate: it is keeping up; stream appends optimistically, at most `maxInflight` unacked.
 * - snapshot: it needs entries we compacted; send the snapshot in pieces, one at a time.
 */
import type { Snapshot } from "./types.ts";

export type ProgressState = "probe" | "replicate" | "snapshot";

/** A snapshot being streamed to one follower. */
export interface SnapshotSend {
  readonly snapshot: Snapshot;
  /** Bytes the follower confirmed holding. */
  acked: number;
  /** Heartbeats since the last confirmation; the current piece is re-sent when this grows. */
  idle: number;
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** Probe state: an append is outstanding. */
  paused = false;
  /** Replicate state: last index of each unacknowledged append, oldest first. */
  inflight: number[] = [];
  snap: SnapshotSend | null = null;
  /** Heard from since the last check-quorum round. */
  recentActive = true;
  /** Highest ReadIndex round this follower has confirmed by answering a heartbeat. */
  readAck = 0;

  constructor(next: number, readonly maxInflight: number) {
    this.next = next;
  }

  becomeProbe(): void {
    if (this.state === "snapshot" && this.snap) {
      this.next = Math.max(this.match + 1, this.snap.snapshot.meta.index + 1);
    } else {
      this.next = this.match + 1;
    }
    this.state = "probe";
    this.paused = false;
    this.inflight = [];
    this.snap = null;
  }

  becomeReplicate(): void {
    this.state = "replicate";
    this.next = this.match + 1;
    this.paused = false;
    this.inflight = [];
    this.snap = null;
  }

  becomeSnapshot(snapshot: Snapshot): void {
    this.state = "snapshot";
    this.paused = false;
    this.inflight = [];
    this.snap = { snapshot, acked: 0, idle: 0 };
  }

  /** The follower acknowledged up to `n`. Returns whether that was news. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.paused = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /**
   * The follower rejected an append whose previous index was `rejected`; `matchHint` is the
   * highest index where it may match us. Returns false for stale rejections.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.paused = false;
    return true;
  }

  /** Record an append carrying entries up to `last` (or none if `last` is null). */
  sentAppend(last: number | null): void {
    if (this.state === "replicate") {
      if (last !== null) {
        this.next = last + 1;
        this.inflight.push(last);
      }
    } else if (this.state === "probe") {
      this.paused = true;
    }
  }

  /** Free in-flight slots for appends up to `index`. */
  freeTo(index: number): void {
    let k = 0;
    while (k < this.inflight.length && this.inflight[k] <= index) k++;
    if (k) this.inflight.splice(0, k);
  }

  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.paused;
      case "replicate":
        return this.inflight.length >= this.maxInflight;
      case "snapshot":
        return true;
    }
  }
}
