/**
 * `filesync snapshot create|list|diff`. On a directory whose node is running, `create` and
 * `list` name committed versions cluster-wide (labels in the replicated index, see history.ts);
 * otherwise they are local snapshots of the scanned tree.
 */
import { clusterSnapshotCreate, clusterSnapshotList } from "./history.ts";
import { toHex } from "../chunk/mod.ts";
import { LocalStore, type SnapshotRecord } from "../store/mod.ts";
import { createSnapshot, diffSnapshots } from "../sync/mod.ts";
import { requireDirectory } from "./errors.ts";
import { formatBytes, formatCount, printJson } from "./format.ts";

function snapshotJson(s: SnapshotRecord) {
  return {
    id: s.id,
    label: s.label,
    root: toHex(s.root),
    time: new Date(s.time).toISOString(),
    files: s.files,
    bytes: s.bytes,
  };
}

async function withStore<T>(dir: string, fn: (s: LocalStore) => Promise<T>): Promise<T> {
  const store = await LocalStore.open(await requireDirectory(dir));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export async function snapshotCreateCommand(
  dir: string,
  label: string | undefined,
  opts: { json?: boolean },
): Promise<number> {
  const cluster = await clusterSnapshotCreate(dir, label, opts);
  if (cluster !== null) return cluster;
  return await withStore(dir, async (store) => {
    const { snapshot, scan } = await createSnapshot(store, label);
    for (const p of scan.problems) console.error(`filesync: ${p.path}: ${p.message}`);
    if (opts.json) printJson(snapshotJson(snapshot));
    else {
      console.log(
        `snapshot ${snapshot.id}${snapshot.label ? ` (${snapshot.label})` : ""}: ` +
          `${formatCount(snapshot.files)} files, ${formatBytes(snapshot.bytes)}, ` +
          `root ${toHex(snapshot.root)}`,
      );
    }
    return scan.problems.length > 0 ? 1 : 0;
  });
}

export async function snapshotListCommand(
  dir: string,
  opts: { json?: boolean },
): Promise<number> {
  const cluster = await clusterSnapshotList(dir, opts);
  if (cluster !== null) return cluster;
  return await withStore(dir, async (store) => {
    const all = await store.snapshots.list();
    if (opts.json) printJson(all.map(snapshotJson));
    else if (all.length === 0) console.log("no snapshots");
    else {
      for (const s of all) {
        const j = snapshotJson(s);
        console.log(
          `${j.id}  ${j.time}  ${(j.label || "-").padEnd(20)} ${formatCount(j.files)} files, ` +
            `${formatBytes(j.bytes)}`,
        );
      }
    }
    return 0;
  });
}

export function snapshotDiffCommand(
  dir: string,
  a: string,
  b: string,
  opts: { json?: boolean },
): Promise<number> {
  return withStore(dir, async (store) => {
    const d = await diffSnapshots(store, a, b);
    if (opts.json) {
      printJson({
        from: snapshotJson(d.from),
        to: snapshotJson(d.to),
        added: d.added,
        removed: d.removed,
        changed: d.changed,
      });
    } else {
      for (const p of d.added) console.log(`+ ${p}`);
      for (const p of d.removed) console.log(`- ${p}`);
      for (const p of d.changed) console.log(`M ${p}`);
      console.log(
        `${d.added.length} added, ${d.removed.length} removed, ${d.changed.length} changed`,
      );
    }
    return 0;
  });
}
