/**
 * `filesync restore <dir> <path> --at VERSION`: make a path (a file, a symlink or a whole
 * directory) as it was at an older committed version, by committing that old state as a new
 * version. Nothing is rewritten in place: the history keeps both, and a restore can itself be
 * undone.
 *
 * planRestore turns the difference between the old state and the current one into ops (puts
 * on the current versions, deletes of what appeared since, deepest first); ensureObjects makes
 * sure this node holds every object the old files need, fetching what it lacks from peers, so
 * the usual write path (durable on a majority, then propose) can follow.
 */
import { type Hash, hashEquals } from "../chunk/mod.ts";
import type { FileOp, IndexRecord, IndexState } from "../fsm/mod.ts";
import { type NodeSource, walkFileChunks } from "../merkle/mod.ts";
import type { LocalStore } from "../store/mod.ts";
import { type CommittedEntry, planTreeChanges, type WantedEntry } from "./tree_plan.ts";

/** Fetch objects from peers; resolves to the hashes no peer could give. */
export type FetchObjects = (
  hashes: Hash[],
  deliver: (hash: Hash, bytes: Uint8Array) => void,
) => Promise<Hash[]>;

/** The ops that bring `path` (and everything below it) back to its state at `version`. */
export async function planRestore(
  index: IndexState,
  path: string,
  version: number,
): Promise<FileOp[]> {
  const old = live(await index.get(path, { at: version }));
  const cur = live(await index.get(path));
  const currentBelow: IndexRecord[] = [];
  for await (const r of index.list({ prefix: path })) currentBelow.push(r);
  if (!old && !cur) {
    throw new Error(`${path} did not exist at version ${version} and does not exist now`);
  }
  if (!old || old.kind !== "dir") {
    // Deepest first, then the entry itself, when it goes or becomes something else.
    const ops: FileOp[] = [];
    const replaceDir = cur?.kind === "dir";
    if (!old || replaceDir) {
      for (const r of currentBelow.reverse()) {
        ops.push({ op: "delete", path: r.path, base: r.version });
      }
      if (cur) ops.push({ op: "delete", path, base: cur.version });
    }
    if (!old) return ops;
    const unchanged = cur && !replaceDir && cur.kind === old.kind && cur.mode === old.mode &&
      hashEquals(cur.root, old.root) && cur.target === old.target;
    if (unchanged) return ops;
    ops.push({
      op: "put",
      path,
      base: cur && !replaceDir ? cur.version : 0,
      kind: old.kind === "symlink" ? "symlink" : "file",
      root: old.root,
      size: old.size,
      mode: old.mode,
      mtime: old.mtime,
      ...(old.kind === "symlink" ? { target: old.target } : {}),
    });
    return ops;
  }
  // A directory: plan as a push of the old subtree over the current one, with deletes.
  const local: WantedEntry[] = [];
  for await (const r of index.list({ prefix: path, at: version })) {
    local.push({
      path: r.path.slice(path.length + 1),
      kind: r.kind,
      size: r.size,
      mtime: r.mtime,
      mode: r.mode,
      ino: 0,
      ...(r.kind === "file" ? { root: r.root } : {}),
      ...(r.kind === "symlink" ? { target: r.target } : {}),
    });
  }
  const remote: CommittedEntry[] = cur ? [cur, ...currentBelow] : currentBelow;
  return planTreeChanges(local, remote, path, true).ops;
}

function live(r: IndexRecord | null): IndexRecord | null {
  return r && !r.deleted ? r : null;
}

/**
 * Make this node hold every tree node and chunk of `roots` (in its packs, or its files through
 * the chunk locator), fetching the rest from peers into the packs, then flush them. Throws if
 * some object is held by no reachable peer: those bytes are gone from the cluster.
 */
export async function ensureObjects(
  store: LocalStore,
  roots: Hash[],
  fetch: FetchObjects,
): Promise<void> {
  const fetchInto = async (hashes: Hash[]) => {
    const missing = await fetch(hashes, (h, bytes) => store.packs.put(h, bytes));
    if (missing.length > 0) {
      throw new Error(
        `${missing.length} objects of that version are held by no reachable member (pruned or lost)`,
      );
    }
  };
  const nodes: NodeSource = {
    getNode: async (h) => {
      if (!(await store.packs.has(h))) await fetchInto([h]);
      return await store.packs.get(h);
    },
  };
  const missing: Hash[] = [];
  for (const root of roots) {
    for await (const c of walkFileChunks(root, nodes)) {
      if (!(await store.packs.has(c.hash)) && (await store.locator.lookup(c.hash)) === null) {
        missing.push(c.hash);
      }
    }
  }
  if (missing.length > 0) await fetchInto(missing);
  await store.packs.flush();
}
