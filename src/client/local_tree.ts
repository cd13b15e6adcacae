/**
 * A plain directory as `filesync push` sees it: every entry (honouring .filesyncignore, never
 * following symlinks, never inside .filesync/, skipping sockets, FIFOs and devices), each file chunked and tree-hashed, and where
 * each object of those trees can be read back. Nothing is written anywhere: a push must not
 * leave state in a build folder.
 */
import { type Hash, hashKey } from "../chunk/mod.ts";
import { hashFile, HashFileError, type WalkEntry, walkTree } from "../sync/mod.ts";
import { ClientError } from "./connect.ts";
import { readBytesAt } from "../util/mod.ts";

/** One entry of the local tree; files carry their root. */
export interface LocalEntry extends WalkEntry {
  root?: Hash;
}

/** Where an object of a local file tree comes from. */
type ObjectSource = { node: Uint8Array } | { path: string; offset: number; length: number };

/** A hashed local tree. */
export class LocalTree {
  readonly entries: LocalEntry[] = [];
  readonly #objects = new Map<string, ObjectSource>();
  /** Object hashes of each file's tree (nodes then chunks), by relative path. */
  readonly #fileObjects = new Map<string, Hash[]>();
  readonly #open = new Map<string, Deno.FsFile>();

  private constructor(readonly root: string) {}

  /**
   * Walk and hash `root`. Any entry that cannot be read fails the whole scan with a
   * ClientError naming it: a push that silently skipped a file would not make the cluster
   * equal to the folder.
   */
  static async scan(
    root: string,
    onProgress?: (p: { files: number; bytes: number }) => void,
    onSkip?: (path: string, why: string) => void,
  ): Promise<LocalTree> {
    const tree = new LocalTree(root);
    const problems: { path: string; message: string }[] = [];
    let files = 0;
    let bytes = 0;
    for await (const e of walkTree(root, problems)) {
      if (e.kind !== "file") {
        tree.entries.push(e);
        continue;
      }
      const hashes: Hash[] = [];
      let hashed;
      try {
        hashed = await hashFile(`${root}/${e.path}`, {}, (chunks) => {
          for (const c of chunks) {
            hashes.push(c.hash.slice());
            tree.#objects.set(hashKey(c.hash), {
              path: e.path,
              offset: c.offset,
              length: c.length,
            });
          }
        });
      } catch (err) {
        const why = err instanceof HashFileError ? err.message : String(err);
        throw new ClientError("unreadable", `cannot read ${e.path}: ${why}`);
      }
      for (const [h, node] of hashed.nodes) {
        tree.#objects.set(hashKey(h), { node: node.slice() });
        hashes.unshift(h.slice());
      }
      tree.#fileObjects.set(e.path, hashes);
      tree.entries.push({ ...e, size: hashed.size, mtime: hashed.mtime, root: hashed.root });
      files++;
      bytes += hashed.size;
      onProgress?.({ files, bytes });
    }
    // Sockets, FIFOs and devices have no content to sync (rsync skips them too); anything
    // else that could not be read fails the push.
    const special = (p: { message: string }) => p.message.startsWith("not a regular file");
    for (const p of problems.filter(special)) onSkip?.(p.path, p.message);
    const fatal = problems.find((p) => !special(p));
    if (fatal) throw new ClientError("unreadable", `cannot read ${fatal.path}: ${fatal.message}`);
    return tree;
  }

  /** Every object (tree nodes, then chunks) of the file at relative `path`. */
  objectsOf(path: string): Hash[] {
    return this.#fileObjects.get(path) ?? [];
  }

  /**
   * The bytes of an object of this tree (the caller verifies them against the hash). Reads of
   * one file are serialized: they share its handle's position (seek, then read).
   */
  read(hash: Hash): Promise<Uint8Array> {
    const src = this.#objects.get(hashKey(hash));
    if (!src) throw new ClientError("unreadable", "an object of the folder is not known");
    if ("node" in src) return Promise.resolve(src.node);
    const turn = (this.#turns.get(src.path) ?? Promise.resolve()).then(() => this.#readChunk(src));
    this.#turns.set(src.path, turn.then(() => {}, () => {}));
    return turn;
  }

  readonly #turns = new Map<string, Promise<void>>();

  async #readChunk(src: { path: string; offset: number; length: number }): Promise<Uint8Array> {
    let file = this.#open.get(src.path);
    if (!file) {
      if (this.#open.size >= 16) {
        // Close the oldest handle in its own file's turn, after the reads already queued there.
        const [first, f] = this.#open.entries().next().value!;
        this.#open.delete(first);
        const closed = (this.#turns.get(first) ?? Promise.resolve()).then(() => f.close());
        this.#turns.set(first, closed.catch(() => {}));
      }
      try {
        file = await Deno.open(`${this.root}/${src.path}`, { read: true });
      } catch (e) {
        throw new ClientError("unreadable", `cannot read ${src.path}: ${(e as Error).message}`);
      }
      this.#open.set(src.path, file);
    }
    const out = await readBytesAt(file, src.offset, src.length);
    if (out === null) {
      throw new ClientError("unreadable", `${src.path} changed while it was pushed (shorter)`);
    }
    return out;
  }

  /** Close the files kept open by read(). */
  close(): void {
    for (const f of this.#open.values()) f.close();
    this.#open.clear();
  }
}
