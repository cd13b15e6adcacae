/**
 * `filesync pull <dir> --from <invite>`: make a local folder equal to one consistent committed
 * version of the cluster's tree (the latest, or the one a version number, snapshot label or
 * time names), then exit. Entries the version lacks are removed (unless `keepExtra`); an entry
 * of another kind is replaced.
 *
 * Files whose size and mtime already match are left alone (rsync's quick check); a file that
 * differs is rebuilt from the chunks of its local version that are still right plus the ones
 * fetched. Each file to write is fetched a window at a time (at most WINDOW_BYTES of chunks in memory, whatever the
 * file sizes), written into a temp file in its directory, fsynced and renamed into place, so
 * a crash or a failed pull never leaves a torn file where a reader would look. Objects come
 * from the gateway first, then from any other member that admits the client. Every object is
 * verified against its hash on arrival, so the bytes written are the committed ones.
 */
import { type Hash, hashEquals, hashKey, sha256 } from "../chunk/mod.ts";
import { indexPathProblem } from "../fsm/mod.ts";
import { EMPTY_FILE_ROOT, type FileChunk, walkFileChunks } from "../merkle/mod.ts";
import {
  checkAncestors,
  hashFile,
  sweepTempFiles,
  tempName,
  type WalkEntry,
  walkTree,
} from "../sync/mod.ts";
import { ancestors, syncedMode } from "../fsm/mod.ts";
import { deadline } from "../net/mod.ts";
import { mapLimit, readBytesAt } from "../util/mod.ts";
import { ClientError, type ClusterClient, connectCluster } from "./connect.ts";
import { readRemoteTree, sessionFailure } from "./remote_tree.ts";
import type { TreeEntry } from "./wire.ts";

/** Chunk bytes fetched and held at once (two windows are: one written, the next fetched). */
const WINDOW_BYTES = 32 * 1024 * 1024;
/** Files of a window written at once. */
const WRITE_CONCURRENCY = 8;

/** A window of chunks: which parts of which files it covers, and their fetched bytes. */
interface Window {
  parts: { job: Job; from: number; to: number }[];
  got: Map<string, Uint8Array>;
  fetched: Promise<void>;
}

/** Options of a pull. */
export interface PullOptions {
  invite: string;
  prefix: string;
  /** "" = latest; else a version number, snapshot label or time. */
  at: string;
  timeoutMs: number;
  /** Keep local entries the version lacks. */
  keepExtra: boolean;
  onProgress?: (
    p: { files: number; filesTotal: number; bytes: number; bytesTotal: number },
  ) => void;
  listen?: string[];
}

/** What a pull did. */
export interface PullSummary {
  version: number;
  files: number;
  bytes: number;
  written: number;
  bytesWritten: number;
  removed: number;
  fetchedBytes: number;
  /** Bytes copied from the local files being replaced instead of fetched. */
  reusedBytes: number;
  seconds: number;
}

/** A file to write and its chunks (filled in when its window is planned). */
interface Job {
  rel: string;
  rec: TreeEntry;
  chunks: FileChunk[];
  next: number;
  tmp: string;
  file: Deno.FsFile | null;
  /** The local file this one replaces: its chunks are copied rather than fetched. */
  old: LocalChunks | null;
}

/** Chunks of a local file by hash, and a handle to read them. */
interface LocalChunks {
  abs: string;
  at: Map<string, { offset: number; length: number }>;
  file: Deno.FsFile | null;
}

/** Run a pull; throws ClientError with a one-line message on failure. */
export async function pull(dir: string, opts: PullOptions): Promise<PullSummary> {
  const started = performance.now();
  const timer = deadline(opts.timeoutMs);
  const signal = timer.signal;
  let client: ClusterClient | null = null;
  try {
    const root = await prepareTarget(dir);
    // Temp files of an earlier pull that was killed: invisible to the walk, so swept here.
    await sweepTempFiles(root);
    client = await connectCluster(opts.invite, { signal, listen: opts.listen });
    const remote = await readRemoteTree(client, opts.prefix, opts.at, signal);
    if (opts.prefix !== "" && !remote.records.some((r) => r.path === opts.prefix)) {
      // Never "make the folder equal to nothing": a mistyped prefix must not empty it.
      throw new ClientError(
        "rejected",
        `${opts.prefix} does not exist in the cluster at version ${remote.version}`,
      );
    }
    const wanted = relativeEntries(remote.records, opts.prefix);
    const local = new Map<string, WalkEntry>();
    for await (const e of walkTree(root, [])) local.set(e.path, e);

    const removed = await removeStale(root, wanted, local, opts.keepExtra);
    const dirs = [...wanted.values()].filter((r) => r.rec.kind === "dir");
    for (const d of dirs) {
      checkAncestors(root, d.rel, true);
      await Deno.mkdir(`${root}/${d.rel}`, { recursive: true });
    }
    const jobs: Job[] = [];
    let files = 0;
    let bytes = 0;
    for (const { rel, rec } of wanted.values()) {
      if (rec.kind === "dir") continue;
      if (rec.kind === "file") {
        files++;
        bytes += rec.size;
      }
      const l = local.get(rel);
      const same = l && l.kind === rec.kind &&
        (rec.kind === "symlink"
          ? l.target === rec.target
          : l.size === rec.size && l.mtime === rec.mtime && l.mode === rec.mode);
      if (same) continue;
      const old = l?.kind === "file" && rec.kind === "file" && l.size > 0
        ? { abs: `${root}/${rel}`, at: new Map(), file: null }
        : null;
      jobs.push({ rel, rec, chunks: [], next: 0, tmp: "", file: null, old });
    }
    let moved: { fetched: number; reused: number };
    try {
      moved = await writeFiles(root, client, jobs, signal, opts.onProgress);
    } finally {
      // A failed pull leaves no temp file behind (the placed files are whole).
      for (const j of jobs) {
        j.old?.file?.close();
        j.file?.close();
        j.file = null;
        if (j.tmp !== "") await Deno.remove(j.tmp).catch(() => {});
      }
    }
    // Directory modes and times last, deepest first: writing into them changed their mtime.
    for (const d of dirs.reverse()) {
      await Deno.chmod(`${root}/${d.rel}`, syncedMode(d.rec.mode || 0o755));
      const t = new Date(d.rec.mtime);
      await Deno.utime(`${root}/${d.rel}`, t, t).catch(() => {});
    }
    return {
      version: remote.version,
      files,
      bytes,
      written: jobs.length,
      bytesWritten: jobs.reduce((n, j) => n + (j.rec.kind === "file" ? j.rec.size : 0), 0),
      removed,
      fetchedBytes: moved.fetched,
      reusedBytes: moved.reused,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (e) {
    if (signal.aborted) {
      throw new ClientError(
        "timeout",
        `timed out after ${opts.timeoutMs / 1000} s: ${(e as Error).message}`,
      );
    }
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
      throw new ClientError("disk", `cannot write into ${dir}: ${(e as Error).message}`);
    }
    if (/ENOSPC|No space left/i.test(String((e as Error)?.message))) {
      throw new ClientError("disk", `disk full while writing into ${dir}`);
    }
    throw sessionFailure(e);
  } finally {
    timer.clear();
    await client?.close();
  }
}

/** Create the folder if needed; refuse a node's synced folder (its daemon owns it). */
async function prepareTarget(dir: string): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const root = await Deno.realPath(dir);
  try {
    await Deno.lstat(`${root}/.filesync`);
    throw new ClientError(
      "usage",
      `${dir} is a synced folder of a node (it has .filesync/); pull into another folder`,
    );
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return root;
}

/** The version's entries below `prefix`, by path relative to it; paths are checked. */
function relativeEntries(
  records: TreeEntry[],
  prefix: string,
): Map<string, { rel: string; rec: TreeEntry }> {
  const out = new Map<string, { rel: string; rec: TreeEntry }>();
  for (const rec of records) {
    if (rec.path === prefix) {
      if (rec.kind !== "dir") {
        throw new ClientError("rejected", `${prefix} is a ${rec.kind}, not a directory`);
      }
      continue;
    }
    const rel = prefix === "" ? rec.path : rec.path.slice(prefix.length + 1);
    const problem = indexPathProblem(rel);
    if (problem || (prefix !== "" && !rec.path.startsWith(`${prefix}/`))) {
      throw new ClientError("corrupt", `the gateway sent an unsafe path ${JSON.stringify(rel)}`);
    }
    out.set(rel, { rel, rec });
  }
  return out;
}

/** Remove local entries the version lacks (unless kept) or has as another kind. */
async function removeStale(
  root: string,
  wanted: Map<string, { rec: TreeEntry }>,
  local: Map<string, WalkEntry>,
  keepExtra: boolean,
): Promise<number> {
  let removed = 0;
  const gone = new Set<string>();
  for (const [path, e] of local) {
    if (ancestors(path).some((a) => gone.has(a))) continue;
    const w = wanted.get(path);
    const stale = w ? w.rec.kind !== e.kind : !keepExtra;
    if (!stale) continue;
    await Deno.remove(`${root}/${path}`, { recursive: true });
    gone.add(path);
    removed++;
  }
  return removed;
}

/**
 * Fetch and write every job, a window of chunks at a time; returns the object bytes fetched
 * and the bytes reused. Tree nodes are fetched first (every root in one request, deeper nodes
 * as the walk needs them), then chunks window by window in file order. A chunk the local file
 * being replaced already holds (same hash) is copied from it and verified, not fetched: an
 * edit in the middle of a large file moves only the chunks it touched, as in a node's sync.
 */
async function writeFiles(
  root: string,
  client: ClusterClient,
  jobs: Job[],
  signal: AbortSignal,
  onProgress: PullOptions["onProgress"],
): Promise<{ fetched: number; reused: number }> {
  let fetchedBytes = 0;
  let reused = 0;
  let peers = [client.gateway];
  const fetchAll = async (hashes: Hash[], sink: (h: Hash, b: Uint8Array) => void) => {
    let missing = hashes;
    for (let round = 0; round < 2 && missing.length > 0; round++) {
      const r = await client.fetcher.fetch(missing, peers, (h, b) => {
        fetchedBytes += b.length;
        sink(h, b);
      }, { stallMs: 10_000, signal });
      missing = r.missing;
      if (missing.length > 0 && round === 0) peers = await client.admitElsewhere(signal);
    }
    if (missing.length > 0) {
      throw new ClientError(
        "unreachable",
        `${missing.length} objects of this version are held by no reachable member`,
      );
    }
  };
  const nodes = new Map<string, Uint8Array>();
  const files = jobs.filter((j) => j.rec.kind === "file");
  const roots = files.map((j) => j.rec.root).filter((r) => !hashEquals(r, EMPTY_FILE_ROOT));
  if (roots.length > 0) await fetchAll(roots, (h, b) => nodes.set(hashKey(h), b));
  const source = {
    getNode: async (h: Hash): Promise<Uint8Array> => {
      const key = hashKey(h);
      if (!nodes.has(key)) await fetchAll([h], (hh, b) => nodes.set(hashKey(hh), b));
      return nodes.get(key)!;
    },
  };
  for (const j of jobs) {
    if (j.rec.kind === "symlink") {
      await placeSymlink(root, j);
      continue;
    }
    for await (const c of walkFileChunks(j.rec.root, source)) j.chunks.push(c);
    nodes.delete(hashKey(j.rec.root));
    if (j.old) await indexLocalChunks(j.old);
  }
  const total = files.reduce((n, j) => n + j.rec.size, 0);
  let done = 0;
  let filesDone = 0;
  // Windows over the files' chunks, in order. The next window is fetched while this one is
  // written, and the files of a window are written a few at a time: a pull is otherwise a
  // sequence of round trips and fsyncs.
  let fileIndex = 0;
  const nextWindow = (): Window | null => {
    if (fileIndex >= files.length) return null;
    const window: Window = { parts: [], got: new Map(), fetched: Promise.resolve() };
    const want = new Map<string, Hash>();
    let windowBytes = 0;
    while (fileIndex < files.length && windowBytes < WINDOW_BYTES) {
      const job = files[fileIndex];
      const from = job.next;
      let to = from;
      while (to < job.chunks.length && windowBytes < WINDOW_BYTES) {
        const c = job.chunks[to++];
        const key = hashKey(c.hash);
        if (!job.old?.at.has(key)) {
          want.set(key, c.hash);
          windowBytes += c.length;
        }
      }
      window.parts.push({ job, from, to });
      job.next = to;
      if (to >= job.chunks.length) fileIndex++;
    }
    if (want.size > 0) {
      window.fetched = fetchAll([...want.values()], (h, b) => window.got.set(hashKey(h), b));
      window.fetched.catch(() => {}); // awaited below; never left unobserved
    }
    return window;
  };
  const writePart = async (got: Map<string, Uint8Array>, part: Window["parts"][number]) => {
    signal.throwIfAborted();
    const { job, from, to } = part;
    if (!job.file) {
      checkAncestors(root, job.rel, true);
      job.tmp = `${parentAbs(root, job.rel)}/${tempName()}`;
      job.file = await Deno.open(job.tmp, { write: true, createNew: true, mode: 0o600 });
    }
    for (let i = from; i < to; i++) {
      const c = job.chunks[i];
      let data = got.get(hashKey(c.hash));
      if (!data) {
        data = (job.old ? await readLocalChunk(job.old, c.hash) : null) ?? undefined;
        if (data) reused += data.length;
        else {
          // The local file changed under us: fetch this chunk after all.
          await fetchAll([c.hash], (h, b) => got.set(hashKey(h), b));
          data = got.get(hashKey(c.hash))!;
        }
      }
      let n = 0;
      while (n < data.length) n += await job.file.write(data.subarray(n));
      done += data.length;
    }
    if (to >= job.chunks.length) {
      await finishFile(root, job);
      filesDone++;
    }
    onProgress?.({ files: filesDone, filesTotal: files.length, bytes: done, bytesTotal: total });
  };
  let current = nextWindow();
  while (current !== null) {
    await current.fetched;
    const next = nextWindow();
    const got = current.got;
    try {
      await mapLimit(current.parts, WRITE_CONCURRENCY, (part) => writePart(got, part));
    } catch (e) {
      await next?.fetched.catch(() => {});
      throw e;
    }
    current = next;
  }
  return { fetched: fetchedBytes, reused };
}

/** Chunk the local file being replaced (nothing if it cannot be read whole). */
async function indexLocalChunks(old: LocalChunks): Promise<void> {
  try {
    await hashFile(old.abs, {}, (chunks) => {
      for (const c of chunks) old.at.set(hashKey(c.hash), { offset: c.offset, length: c.length });
    });
  } catch {
    old.at.clear();
  }
}

/** A chunk of the local file, verified; null if it is no longer there. */
async function readLocalChunk(old: LocalChunks, hash: Hash): Promise<Uint8Array | null> {
  const at = old.at.get(hashKey(hash));
  if (!at) return null;
  try {
    old.file ??= await Deno.open(old.abs, { read: true });
    const out = await readBytesAt(old.file, at.offset, at.length);
    return out !== null && hashEquals(sha256(out), hash) ? out : null;
  } catch {
    return null;
  }
}

function parentAbs(root: string, rel: string): string {
  const i = rel.lastIndexOf("/");
  return i < 0 ? root : `${root}/${rel.slice(0, i)}`;
}

/** fsync, set mode and mtime, rename into place. */
async function finishFile(root: string, job: Job): Promise<void> {
  const f = job.file!;
  try {
    await f.sync();
    const t = new Date(job.rec.mtime);
    await f.utime(t, t);
  } finally {
    f.close();
    job.file = null;
  }
  await Deno.chmod(job.tmp, syncedMode(job.rec.mode));
  await Deno.rename(job.tmp, `${root}/${job.rel}`);
  job.tmp = "";
}

async function placeSymlink(root: string, job: Job): Promise<void> {
  checkAncestors(root, job.rel, true);
  job.tmp = `${parentAbs(root, job.rel)}/${tempName()}`;
  await Deno.symlink(job.rec.target ?? "", job.tmp);
  await Deno.rename(job.tmp, `${root}/${job.rel}`);
  job.tmp = "";
}
