/**
 * Synced state: for each path, the committed version that this node's disk content
 * corresponds to. It is the common ancestor of a three-way comparison (local disk, synced,
 * committed index): without it a node could not tell "I edited this" from "someone else
 * edited this", nor "deleted here" from "created there".
 *
 * Kept in the node's Deno KV under ["synced", path]. Only live entries are recorded: once a
 * deletion is synced the path's record is removed, so "no record" means "nothing of this path
 * is on disk as far as sync knows".
 */
import { assertHash, type Hash } from "../chunk/mod.ts";
import type { FileOp, IndexRecord } from "../fsm/mod.ts";
import { EMPTY_FILE_ROOT } from "../merkle/mod.ts";
import { LIST_ALL_BATCH } from "../util/mod.ts";
import {
  type EntryKind,
  type KvBatch,
  loadRecordsUnder,
  type LocalFileRecord,
  SchemaError,
} from "../store/mod.ts";

/** What this node's disk held at `path` when it last matched a committed version. */
export interface SyncedRecord {
  /** The committed version (Raft log index) the disk content corresponds to. */
  version: number;
  kind: EntryKind;
  /** File tree root (files); EMPTY_FILE_ROOT for dirs and symlinks. */
  root: Hash;
  mode: number;
  mtime: number;
  size: number;
  /** Symlink target, for symlinks only. */
  target?: string;
}

/** KV key prefix of every synced record. */
export const SYNCED_PREFIX: Deno.KvKey = ["synced"];

/** KV key of one path's synced record. */
export function syncedKey(path: string): Deno.KvKey {
  return ["synced", path];
}

const KINDS: readonly EntryKind[] = ["file", "dir", "symlink"];

function field(r: Record<string, unknown>, name: string, min: number | null): number {
  const v = r[name];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || (min !== null && v < min)) {
    throw new SchemaError(
      `synced record: field ${name} must be an integer${min ? ` >= ${min}` : ""}`,
    );
  }
  return v;
}

/** Validate a stored value; SchemaError if the database holds something else. */
export function parseSyncedRecord(value: unknown): SyncedRecord {
  if (typeof value !== "object" || value === null) {
    throw new SchemaError("synced record: not a record");
  }
  const r = value as Record<string, unknown>;
  const kind = r.kind as EntryKind;
  if (!KINDS.includes(kind)) throw new SchemaError("synced record: bad kind");
  try {
    assertHash(r.root, "synced record: field root");
  } catch (e) {
    throw new SchemaError((e as Error).message);
  }
  const out: SyncedRecord = {
    version: field(r, "version", 1),
    kind,
    root: r.root as Hash,
    mode: field(r, "mode", 0),
    mtime: field(r, "mtime", null),
    size: field(r, "size", 0),
  };
  if (kind === "symlink") {
    if (typeof r.target !== "string") {
      throw new SchemaError("synced record: field target must be a string");
    }
    out.target = r.target;
  }
  return out;
}

/** The synced record for a live committed entry. */
export function syncedFromIndex(rec: IndexRecord): SyncedRecord {
  if (rec.deleted) throw new TypeError(`${rec.path} is a tombstone: it has no synced record`);
  const out: SyncedRecord = {
    version: rec.version,
    kind: rec.kind,
    root: rec.root,
    mode: rec.mode,
    mtime: rec.mtime,
    size: rec.size,
  };
  if (rec.kind === "symlink") out.target = rec.target ?? "";
  return out;
}

/**
 * The synced record for local content that was just committed at `version` (after this node's
 * own upload succeeded): the disk holds exactly what was proposed.
 */
export function syncedFromLocal(version: number, local: LocalFileRecord): SyncedRecord {
  const out: SyncedRecord = {
    version,
    kind: local.kind,
    root: local.root,
    mode: local.mode,
    mtime: local.mtime,
    size: local.size,
  };
  if (local.kind === "symlink") out.target = local.target ?? "";
  return out;
}

/**
 * The synced records implied by an upload op once it is committed at `version`: the disk held
 * what was proposed. `local` is the local view the op was planned from (rename targets take
 * their record from it). A null record means "remove the path's record".
 */
export function syncedAfterUpload(
  op: FileOp,
  version: number,
  local: ReadonlyMap<string, LocalFileRecord>,
): { path: string; rec: SyncedRecord | null }[] {
  switch (op.op) {
    case "put": {
      const rec: SyncedRecord = {
        version,
        kind: op.kind,
        root: op.root,
        mode: op.mode,
        mtime: op.mtime,
        size: op.size,
      };
      if (op.kind === "symlink") rec.target = op.target ?? "";
      return [{ path: op.path, rec }];
    }
    case "mkdir":
      return [{
        path: op.path,
        rec: {
          version,
          kind: "dir",
          root: EMPTY_FILE_ROOT,
          mode: op.mode,
          mtime: op.mtime,
          size: 0,
        },
      }];
    case "delete":
      return [{ path: op.path, rec: null }];
    case "rename": {
      const to = local.get(op.to);
      if (!to) throw new TypeError(`rename target ${op.to} is not in the local records`);
      return [{ path: op.from, rec: null }, { path: op.to, rec: syncedFromLocal(version, to) }];
    }
  }
}

/** Read and write access to the synced records in a node's KV. */
export class SyncedState {
  constructor(private readonly kv: Deno.Kv) {}

  /** The record for one path, or null. */
  async get(path: string): Promise<SyncedRecord | null> {
    const entry = await this.kv.get(syncedKey(path));
    return entry.value === null ? null : parseSyncedRecord(entry.value);
  }

  /** Every record, in key order. */
  async *list(): AsyncGenerator<[string, SyncedRecord]> {
    for await (
      const entry of this.kv.list({ prefix: SYNCED_PREFIX }, { batchSize: LIST_ALL_BATCH })
    ) {
      yield [entry.key[1] as string, parseSyncedRecord(entry.value)];
    }
  }

  /** The records of these paths and of everything below them (a path may name a directory). */
  loadUnder(paths: readonly string[]): Promise<Map<string, SyncedRecord>> {
    return loadRecordsUnder(this.kv, SYNCED_PREFIX, paths, parseSyncedRecord);
  }

  /** All records in a Map (what reconcile() takes). */
  async loadAll(): Promise<Map<string, SyncedRecord>> {
    const out = new Map<string, SyncedRecord>();
    for await (const [path, rec] of this.list()) out.set(path, rec);
    return out;
  }

  /** Queue a record. */
  put(batch: KvBatch, path: string, rec: SyncedRecord): Promise<void> {
    return batch.set(syncedKey(path), rec);
  }

  /** Queue removal of a path's record. */
  delete(batch: KvBatch, path: string): Promise<void> {
    return batch.delete(syncedKey(path));
  }

  /**
   * Queue "the disk now matches this committed entry": a live entry is recorded, a tombstone
   * (or no entry at all) removes the path's record. What reconcile's `adopt` list needs.
   */
  adopt(batch: KvBatch, path: string, committed: IndexRecord | null | undefined): Promise<void> {
    if (!committed || committed.deleted) return this.delete(batch, path);
    return this.put(batch, path, syncedFromIndex(committed));
  }

  /** Queue the records implied by an upload op committed at `version` (syncedAfterUpload). */
  async recordUpload(
    batch: KvBatch,
    op: FileOp,
    version: number,
    local: ReadonlyMap<string, LocalFileRecord>,
  ): Promise<void> {
    for (const { path, rec } of syncedAfterUpload(op, version, local)) {
      if (rec) await this.put(batch, path, rec);
      else await this.delete(batch, path);
    }
  }
}
