/**
 * What must be durable on a majority before a change is proposed (DESIGN, write path step 4):
 * the Merkle tree nodes and chunks of every file an upload puts. Directories, symlinks,
 * deletes and renames carry no objects (a rename reuses the content the old path committed).
 */
import type { Hash } from "../chunk/mod.ts";
import type { FileOp } from "../fsm/mod.ts";
import { EMPTY_FILE_ROOT, type NodeSource, walkFileChunks } from "../merkle/mod.ts";
import { hashEquals } from "../chunk/mod.ts";

/** Most objects of a previous version remembered to leave out of a push (bounds memory). */
const MAX_PREVIOUS_OBJECTS = 1 << 20;

/**
 * The objects of the file trees the ops put that peers may lack: tree nodes first, then
 * chunks, each once. An op based on a committed version (`previousRoot` returns its root)
 * leaves out every object of that version's tree: it was made durable on a majority when it
 * was committed, so an edit pushes only what it changed (the Merkle diff of DESIGN step 4).
 * `nodes` is where this node keeps its tree nodes (the pack store).
 */
export async function objectsOfOps(
  ops: FileOp[],
  nodes: NodeSource,
  previousRoot: (op: FileOp) => Hash | null = () => null,
): Promise<Hash[]> {
  const seen = new Set<string>();
  const out: Hash[] = [];
  const chunks: Hash[] = [];
  const add = (list: Hash[], h: Hash) => {
    const key = hashKey(h);
    if (seen.has(key)) return;
    seen.add(key);
    list.push(h);
  };
  // Walking the chunks reads every node of the tree through this source: record them.
  const recording = (onNode: (h: Hash) => void): NodeSource => ({
    getNode: (hash) => {
      onNode(hash);
      return nodes.getNode(hash);
    },
  });
  for (const op of ops) {
    if (op.op !== "put" || op.kind !== "file" || hashEquals(op.root, EMPTY_FILE_ROOT)) continue;
    const previous = previousRoot(op);
    if (previous !== null && !hashEquals(previous, EMPTY_FILE_ROOT)) {
      await rememberTree(previous, nodes, seen);
    }
    for await (const c of walkFileChunks(op.root, recording((h) => add(out, h)))) {
      add(chunks, c.hash);
    }
  }
  return [...out, ...chunks];
}

/**
 * Add every object of a tree to `seen` (up to a bound). A tree that cannot be read locally
 * leaves `seen` as it was: the push then offers everything and the peer's answers to `have`
 * sort it out.
 */
async function rememberTree(root: Hash, nodes: NodeSource, seen: Set<string>): Promise<void> {
  const found: string[] = [];
  const source: NodeSource = {
    getNode: (hash) => {
      found.push(hashKey(hash));
      return nodes.getNode(hash);
    },
  };
  try {
    for await (const c of walkFileChunks(root, source)) {
      found.push(hashKey(c.hash));
      if (found.length > MAX_PREVIOUS_OBJECTS) break;
    }
  } catch {
    return;
  }
  for (const key of found) seen.add(key);
}

/** A binary-string key for a hash: cheaper than hex in sets. */
function hashKey(h: Hash): string {
  return String.fromCharCode(...h);
}
