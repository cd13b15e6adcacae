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
 * A path may have several pending proposals (each new plan proposes again while an earlier
 * outcome is unknown), so records are keyed by path and a sequence number.
 */
import { hashEquals } from "../chunk/mod.ts";
import type { FileOp, IndexRecord } from "../fsm/mod.ts";
import { type KvBatch, type LocalFileRecord, SchemaError } from "../store/mod.ts";
import {
  opPaths,
  parseSyncedRecord,
  syncedAfterUpload,
  type SyncedRecord,
  type SyncedState,
} from "./synced_state.ts";

/** KV key prefix of the pending records: ["proposing", path, seq]. */
export const PENDING_PREFIX: Deno.KvKey = ["proposing"];

/** One pending proposal's effect on one path. */
interface Pending {
  seq: number;
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

function parsePending(seq: unknown, value: unknown): Pending {
  const v = value as { after?: unknown; rec?: unknown } | null;
  if (
    typeof seq !== "number" || typeof v !== "object" || v === null ||
    typeof v.after !== "number" || v.rec === undefined
  ) {
    throw new SchemaError("pending proposal: malformed record");
  }
  return { seq, after: v.after, rec: v.rec === null ? null : parseSyncedRecord(v.rec) };
}

/** Whether a committed entry is what a pending proposal would have made of its path. */
function isOutcomeOf(c: IndexRecord, p: Pending): boolean {
  if (p.rec === null) return c.deleted;
  if (c.deleted || c.kind !== p.rec.kind || c.mode !== p.rec.mode) return false;
  if (c.kind === "symlink") return (c.target ?? "") === (p.rec.target ?? "");
  return hashEquals(c.root, p.rec.root);
}

/** The pending proposals of one node (its own KV). */
export class PendingProposals {
  /** Increasing across restarts as long as the clock does not run back by much. */
  #seq = Date.now() * 1000;

  constructor(private readonly kv: Deno.Kv) {}

  /**
   * Record, durably, what `ops` would make of their paths; call before proposing them. Returns
   * the proposal's sequence number for `settle`.
   */
  async record(
    ops: readonly FileOp[],
    local: ReadonlyMap<string, LocalFileRecord>,
    after: number,
    batch: KvBatch,
  ): Promise<number> {
    const seq = ++this.#seq;
    for (const op of ops) {
      for (const { path, rec } of syncedAfterUpload(op, after + 1, local)) {
        await batch.set([...PENDING_PREFIX, path, seq], { after, rec });
      }
    }
    await batch.flush();
    return seq;
  }

  /** Queue the removal of a proposal's records: its outcome is now known and recorded. */
  async settle(ops: readonly FileOp[], seq: number, batch: KvBatch): Promise<void> {
    for (const op of ops) {
      for (const path of opPaths(op)) await batch.delete([...PENDING_PREFIX, path, seq]);
    }
  }

  /**
   * Bring the synced state up to every committed entry that is the outcome of a pending
   * proposal (proposed by `self`, newer than the proposal, with its content), as the engine
   * would have recorded it had it heard of the commit. Records that can no longer come true
   * are dropped. Returns the paths whose synced record changed.
   */
  async recover(index: CommittedReader, synced: SyncedState, self: string, batch: KvBatch) {
    const byPath = new Map<string, Pending[]>();
    for await (const e of this.kv.list({ prefix: PENDING_PREFIX })) {
      const path = e.key[1] as string;
      const list = byPath.get(path) ?? [];
      list.push(parsePending(e.key[2], e.value));
      byPath.set(path, list);
    }
    const changed: string[] = [];
    if (byPath.size === 0) return changed;
    const at = await index.applied();
    for (const [path, pending] of byPath) {
      const c = await index.get(path, { at });
      if (!c) continue; // nothing committed at the path yet: any of them may still be
      const ours = c.origin === self
        ? pending.filter((p) => p.after < c.version && isOutcomeOf(c, p))
        : [];
      if (ours.length > 0) {
        const seq = Math.max(...ours.map((p) => p.seq));
        const s = await synced.get(path);
        if (!s || s.version < c.version) {
          await synced.adopt(batch, path, c);
          changed.push(path);
        }
        // Proposed before the one that committed: based on an older version, they cannot
        // commit any more (compare-and-swap).
        for (const p of pending) {
          if (p.seq <= seq) await batch.delete([...PENDING_PREFIX, path, p.seq]);
        }
        continue;
      }
      // A live entry someone else committed after a proposal: the proposal's base is gone, so
      // it can never apply (a removal's base too; only a create on a deleted path could).
      if (c.origin !== self && !c.deleted) {
        for (const p of pending) {
          if (p.after < c.version) await batch.delete([...PENDING_PREFIX, path, p.seq]);
        }
      }
    }
    await batch.flush();
    return changed;
  }
}
