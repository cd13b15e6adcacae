/**
 * What must be durable on a majority before a change is proposed (DESIGN, write path step 4):
 * the Merkle tree nodes and chunks of every file an upload puts. Directories, symlinks,
 * deletes and renames carry no objects (a rename reuses the content the old path committed).
 */
import { type Hash, hashEquals, hashKey } from "../chunk/mod.ts";
import type { FileOp } from "../fsm/mod.ts";
import { EMPTY_FILE_ROOT, type NodeSource, walkFileChunks } from "../merkle/mod.ts";

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
  for (const op of ops) {
    if (op.op !== "put" || op.kind !== "file" || hashEquals(op.root, EMPTY_FILE_ROOT)) continue;
    const previous = previousRoot(op);
    if (previous !== null && !hashEquals(previous, EMPTY_FILE_ROOT)) {
      await rememberTree(previous, nodes, seen);
    }
    for await (const o of treeObjects(op.root, nodes)) add(o.node ? out : chunks, o.hash);
  }
  return [...out, ...chunks];
}

/**
 * Every object of a file tree: its nodes as the walk reads them (walking the chunks reads
 * every node), and its chunks.
 */
async function* treeObjects(
  root: Hash,
  nodes: NodeSource,
): AsyncGenerator<{ hash: Hash; node: boolean }> {
  const read: Hash[] = [];
  const recording: NodeSource = {
    getNode: (hash) => {
      read.push(hash);
      return nodes.getNode(hash);
    },
  };
  for await (const c of walkFileChunks(root, recording)) {
    for (const hash of read.splice(0)) yield { hash, node: true };
    yield { hash: c.hash, node: false };
  }
  for (const hash of read) yield { hash, node: true };
}

/**
 * Add every object of a tree to `seen` (up to a bound). A tree that cannot be read locally
 * leaves `seen` as it was: the push then offers everything and the peer's answers to `have`
 * sort it out.
 */
async function rememberTree(root: Hash, nodes: NodeSource, seen: Set<string>): Promise<void> {
  const found: string[] = [];
  try {
    for await (const o of treeObjects(root, nodes)) {
      found.push(hashKey(o.hash));
      if (found.length > MAX_PREVIOUS_OBJECTS) break;
    }
  } catch {
    return;
  }
  for (const key of found) seen.add(key);
}
