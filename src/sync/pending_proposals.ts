/**
 * Proposals this node made whose outcome it has not recorded: what each would make the synced
 * state of its paths, kept in Deno KV from just before the proposal until the engine records
 * the result.
 *
 * Why: a proposal can commit without this node hearing of it. It times out while the node is
 * cut off and commits once the majority is back, or the node dies between the commit and
 * recording it. The committed entry then looks like someone else's change (its version is newer
 * than the synced one), and whatever the user did locally since (deleted the file, renamed
 * it, edited it again) would lose to the node's own older content: the deleted file came back,
 * the edit became a conflict copy. With the pending record, a committed entry that this node
 * proposed with exactly that content, after the proposal was made, is recognised as its own:
 * the synced state is brought up to it (`recover`), and the local change since is planned as
 * the local change it is.
 *
 * A path may have several pending proposals with different contents (each new plan proposes
 * again while an earlier outcome is unknown: the user kept editing while cut off), so records
 * are keyed by path and content. Proposing the same content again replaces its record (only
 * the latest `after` matters: had the earlier proposal committed before the later one was made,
 * the pass that made it would have recovered it first), so a long partition does not pile up
 * one record per retry.
 */
import { hashEquals, toHex } from "../chunk/mod.ts";
import type { FileOp, IndexRecord } from "../fsm/mod.ts";
import { type KvBatch, type LocalFileRecord, SchemaError } from "../store/mod.ts";
import {
  parseSyncedRecord,
  syncedAfterUpload,
  type SyncedRecord,
  type SyncedState,
} from "./synced_state.ts";

/** KV key prefix of the pending records: ["proposing", path, content]. */
export const PENDING_PREFIX: Deno.KvKey = ["proposing"];

/** One pending proposal's effect on one path. */
interface Pending {
  /** The content part of its key (see contentKey). */
  content: string;
  /** The applied index when it was proposed: only a later version can be its outcome. */
  after: number;
  /**
   * The synced record it implies, or null for a removal. Its version is the least its outcome
   * could have (after + 1): the real one is known only once committed.
   */
  rec: SyncedRecord | null;
}

/** What reads the committed index (IndexState). */
export interface CommittedReader {
  applied(): Promise<number>;
  get(path: string, options?: { at?: number }): Promise<IndexRecord | null>;
}

/** What a proposal makes of a path, as a key: removal, or kind, mode and content. */
function contentKey(rec: SyncedRecord | null): string {
  if (rec === null) return "removed";
  return `${rec.kind} ${rec.mode} ${toHex(rec.root)} ${rec.target ?? ""}`;
}

/** A stored record, or null if it is not one this code wrote. */
function parsePending(content: unknown, value: unknown): Pending | null {
  const v = value as { after?: unknown; rec?: unknown } | null;
  if (
    typeof content !== "string" || typeof v !== "object" || v === null ||
    typeof v.after !== "number" || v.rec === undefined
  ) {
    return null;
  }
  try {
    return { content, after: v.after, rec: v.rec === null ? null : parseSyncedRecord(v.rec) };
  } catch (e) {
    if (e instanceof SchemaError) return null;
    throw e;
  }
}

/** Whether a committed entry is what a pending proposal would have made of its path. */
function isOutcomeOf(c: IndexRecord, p: Pending): boolean {
  if (p.rec === null) return c.deleted;
  if (c.deleted || c.kind !== p.rec.kind || c.mode !== p.rec.mode) return false;
  if (c.kind === "symlink") return (c.target ?? "") === (p.rec.target ?? "");
  return hashEquals(c.root, p.rec.root);
}

/** The synced records a proposal of `ops` implies, path by path (version: at least after + 1). */
function effects(
  ops: readonly FileOp[],
  local: ReadonlyMap<string, LocalFileRecord>,
  after: number,
): { path: string; rec: SyncedRecord | null }[] {
  return ops.flatMap((op) => syncedAfterUpload(op, after + 1, local));
}

/** The pending proposals of one node (its own KV). */
export class PendingProposals {
  constructor(private readonly kv: Deno.Kv) {}

  /**
   * Record, durably, what `ops` would make of their paths; call before proposing them, with
   * `local` the view they were planned from and `after` the applied index now.
   */
  async record(
    ops: readonly FileOp[],
    local: ReadonlyMap<string, LocalFileRecord>,
    after: number,
    batch: KvBatch,
  ): Promise<void> {
    for (const { path, rec } of effects(ops, local, after)) {
      await batch.set([...PENDING_PREFIX, path, contentKey(rec)], { after, rec });
    }
    await batch.flush();
  }

  /**
   * Queue the removal of a proposal's records (same arguments as `record`): its outcome is
   * now known, and recorded by the caller.
   */
  async settle(
    ops: readonly FileOp[],
    local: ReadonlyMap<string, LocalFileRecord>,
    batch: KvBatch,
  ): Promise<void> {
    for (const { path, rec } of effects(ops, local, 0)) {
      await batch.delete([...PENDING_PREFIX, path, contentKey(rec)]);
    }
  }

  /**
   * Drop every pending record of these paths: a restore this node proposes writes them with
   * content that did not come from its disk, and must not be taken for its own upload (which
   * a pending record of the same content would make it).
   */
  async forget(paths: readonly string[], batch: KvBatch): Promise<void> {
    for (const path of paths) {
      for await (const e of this.kv.list({ prefix: [...PENDING_PREFIX, path] })) {
        await batch.delete(e.key);
      }
    }
    await batch.flush();
  }

  /**
   * Bring the synced state up to every committed entry that is the outcome of a pending
   * proposal (proposed by `self`, newer than the proposal, with its content), as the engine
   * would have recorded it had it heard of the commit. Records that can no longer come true
   * are dropped. Returns the paths whose synced record changed.
   */
  async recover(
    index: CommittedReader,
    synced: SyncedState,
    self: string,
    batch: KvBatch,
  ): Promise<string[]> {
    const byPath = new Map<string, Pending[]>();
    for await (const e of this.kv.list({ prefix: PENDING_PREFIX })) {
      const path = e.key[1];
      const pending = typeof path === "string" ? parsePending(e.key[2], e.value) : null;
      // A record this code cannot read only costs what it was for: dropped, not fatal.
      if (pending === null) await batch.delete(e.key);
      else byPath.set(path as string, [...byPath.get(path as string) ?? [], pending]);
    }
    const changed: string[] = [];
    if (byPath.size === 0) {
      await batch.flush();
      return changed;
    }
    const at = await index.applied();
    for (const [path, pending] of byPath) {
      const c = await index.get(path, { at });
      if (!c) continue; // nothing committed at the path yet: any of them may still be
      const older = pending.filter((p) => p.after < c.version);
      const ours = c.origin === self && older.some((p) => isOutcomeOf(c, p));
      if (ours) {
        const s = await synced.get(path);
        if (!s || s.version < c.version) {
          await synced.adopt(batch, path, c);
          changed.push(path);
        }
      }
      // Proposed before this version, the others were based on an older one: they can no
      // longer pass their compare-and-swap (only a create on a path deleted since could).
      if (ours || (c.origin !== self && !c.deleted)) {
        for (const p of older) await batch.delete([...PENDING_PREFIX, path, p.content]);
      }
    }
    await batch.flush();
    return changed;
  }
}
