/**
 * Local named snapshots of the directory tree: create one from a fresh scan, list them, and
 * diff two by walking only the directory-tree nodes that differ.
 */
import { diffDirTrees } from "../merkle/mod.ts";
import type { LocalStore, SnapshotRecord } from "../store/mod.ts";
import { type ScanOptions, type ScanResult, scanTree } from "./scanner.ts";

/** Scan the directory, then record its tree as a snapshot. */
export async function createSnapshot(
  store: LocalStore,
  label: string | undefined,
  scanOptions: ScanOptions = {},
): Promise<{ snapshot: SnapshotRecord; scan: ScanResult }> {
  const scan = await scanTree(store, scanOptions);
  const snapshot = await store.snapshots.create({
    label,
    root: scan.root,
    time: Date.now(),
    files: scan.files,
    bytes: scan.bytes,
  });
  return { snapshot, scan };
}

/** Paths added, removed and changed from snapshot `a` to snapshot `b` (by label or id). */
export async function diffSnapshots(
  store: LocalStore,
  a: string,
  b: string,
): Promise<
  {
    from: SnapshotRecord;
    to: SnapshotRecord;
    added: string[];
    removed: string[];
    changed: string[];
  }
> {
  const from = await store.snapshots.resolve(a);
  const to = await store.snapshots.resolve(b);
  const d = await diffDirTrees(from.root, to.root, store.packs);
  return { from, to, ...d };
}
