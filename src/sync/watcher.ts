/**
 * The watcher: turns file system events (inotify.ts on Linux, else Deno.watchFs) into batches
 * of changed relative paths for the sync loop, which rescans and reconciles them.
 *
 * - Debounced: a batch is emitted after a quiet period (default 100 ms without events), or at
 *   the latest 1 s after its first event under a continuous stream, so a burst of writes
 *   becomes one batch and a busy tree still makes progress.
 * - Files still being written are held back: a file modified within the settle window
 *   (default 50 ms) is stat'ed again after it; if its size or mtime moved, it is retried in a
 *   later batch, until it settles (or until the 1 s limit, after which it goes out anyway: the
 *   scanner copes with a file that changes while read, and a later event follows).
 * - Never reported: the `.filesync/` data folder (not even watched, where inotify is used),
 *   materializer temp files (isTempName), and whatever the `ignore` option rejects.
 * - This node's own writes: the materializer announces each write (expect()); an event whose
 *   path then looks exactly as announced (a file's size and mtime, a symlink's target, a
 *   directory, or absence) is dropped. Announcements expire (default 10 s).
 * - Bounded memory: beyond `maxPending` distinct paths the batch degrades to "overflow" (the
 *   caller rescans everything), and at most `maxExpected` announcements are kept.
 *
 * Events can be missed (queue overflow in the kernel, a tree replaced wholesale), so the
 * daemon keeps a periodic full rescan as a safety net; the watcher only makes the common case
 * fast.
 */
import { DATA_DIR_NAME } from "../store/mod.ts";
import { isTempName } from "./materializer.ts";
import { statFields } from "./walk.ts";
import { type TreeWatch, watchTree } from "./inotify.ts";

/** What the materializer is about to leave at a path. */
export type ExpectedEntry =
  | { kind: "file"; size: number; mtime: number }
  | { kind: "symlink"; target?: string }
  | { kind: "dir" }
  | { kind: "absent" };

/** One batch of changes. */
export interface WatchBatch {
  /** Changed paths, relative POSIX, sorted; they may no longer exist. */
  paths: string[];
  /** Too many changes to list (or events were lost): rescan the whole tree. */
  overflow: boolean;
}

export interface WatcherOptions {
  /** Quiet period before a batch is emitted. Default 100 ms. */
  debounceMs?: number;
  /** Longest a change waits under a continuous stream of events. Default 1,000 ms. */
  maxDelayMs?: number;
  /** A file modified this recently is checked again after this long. Default 50 ms. */
  settleMs?: number;
  /** Distinct pending paths before the batch becomes an overflow. Default 10,000. */
  maxPending?: number;
  /** How long an announced own write is remembered. Default 10,000 ms. */
  expectTtlMs?: number;
  /** Most announcements kept (oldest dropped first). Default 10,000. */
  maxExpected?: number;
  /** Extra paths to leave out (ignore rules), relative POSIX. */
  ignore?: (path: string) => boolean;
  /** Errors of the watch itself or of onBatch. Default: logged with console.error. */
  onError?: (error: unknown) => void;
}

/** Sleep that close() can cut short, so no timer outlives the watcher. */
interface Sleeper {
  timer: ReturnType<typeof setTimeout>;
  resolve: () => void;
}

/** A debounced, filtered view of file system events under one directory. */
export class Watcher {
  readonly root: string;
  readonly #onBatch: (batch: WatchBatch) => void | Promise<void>;
  readonly #debounceMs: number;
  readonly #maxDelayMs: number;
  readonly #settleMs: number;
  readonly #maxPending: number;
  readonly #expectTtlMs: number;
  readonly #maxExpected: number;
  readonly #ignore: (path: string) => boolean;
  readonly #onError: (error: unknown) => void;

  readonly #fs: TreeWatch;
  readonly #loop: Promise<void>;
  /** Pending path -> when it was first seen (for the max delay of retried paths). */
  #pending = new Map<string, number>();
  #overflow = false;
  #batchStart = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #flushing: Promise<void> | null = null;
  #expected = new Map<string, { entry: ExpectedEntry; until: number }>();
  #sleepers = new Set<Sleeper>();
  #closed = false;

  /** Start watching `root` (recursively); batches go to `onBatch`, one at a time. */
  constructor(
    root: string,
    onBatch: (batch: WatchBatch) => void | Promise<void>,
    options: WatcherOptions = {},
  ) {
    this.root = Deno.realPathSync(root);
    this.#onBatch = onBatch;
    this.#debounceMs = options.debounceMs ?? 100;
    this.#maxDelayMs = options.maxDelayMs ?? 1000;
    this.#settleMs = options.settleMs ?? 50;
    this.#maxPending = options.maxPending ?? 10_000;
    this.#expectTtlMs = options.expectTtlMs ?? 10_000;
    this.#maxExpected = options.maxExpected ?? 10_000;
    this.#ignore = options.ignore ?? (() => false);
    this.#onError = options.onError ?? ((e) => console.error("watcher:", e));
    this.#fs = watchTree(this.root, {
      exclude: (rel) => rel === DATA_DIR_NAME,
      onError: this.#onError,
    });
    this.#loop = this.#pump();
  }

  /**
   * Announce an own write: an event at `path` is dropped while the path looks like `entry`.
   * Call it before the write, so the event cannot arrive first.
   */
  expect(path: string, entry: ExpectedEntry): void {
    if (this.#closed) return;
    const now = Date.now();
    this.#purgeExpected(now);
    this.#expected.delete(path);
    this.#expected.set(path, { entry, until: now + this.#expectTtlMs });
    while (this.#expected.size > this.#maxExpected) {
      this.#expected.delete(this.#expected.keys().next().value!);
    }
  }

  /** Number of remembered announcements (for tests and status). */
  get expectedCount(): number {
    return this.#expected.size;
  }

  /** Stop watching; resolves once no event, timer or batch callback is left running. */
  async close(): Promise<void> {
    if (this.#closed) {
      await this.#loop;
      return;
    }
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const s of this.#sleepers) {
      clearTimeout(s.timer);
      s.resolve();
    }
    this.#sleepers.clear();
    try {
      this.#fs.close();
    } catch {
      // Already closed by a failed watch.
    }
    await this.#loop;
    await this.#flushing;
    this.#pending.clear();
    this.#expected.clear();
  }

  async #pump(): Promise<void> {
    try {
      for await (const event of this.#fs) {
        if (this.#closed) break;
        const now = Date.now();
        for (const abs of event.paths) this.#add(abs, now);
        if (event.rescan) this.#overflowed();
      }
    } catch (e) {
      if (!this.#closed) this.#onError(e);
    }
  }

  /** The relative path of an event's absolute path, or null if it is not reported. */
  #relative(abs: string): string | null {
    if (!abs.startsWith(`${this.root}/`)) return null;
    const rel = abs.slice(this.root.length + 1);
    if (rel === "" || rel === DATA_DIR_NAME || rel.startsWith(`${DATA_DIR_NAME}/`)) return null;
    if (isTempName(rel.slice(rel.lastIndexOf("/") + 1))) return null;
    if (this.#ignore(rel)) return null;
    return rel;
  }

  #add(abs: string, firstSeen: number): void {
    const rel = this.#relative(abs);
    if (rel === null) return;
    this.#addRelative(rel, firstSeen);
  }

  /** Events were lost, or too many paths wait: the next batch asks for a whole rescan. */
  #overflowed(): void {
    if (this.#pending.size === 0 && !this.#overflow) this.#batchStart = Date.now();
    this.#pending.clear();
    this.#overflow = true;
    this.#schedule();
  }

  #addRelative(rel: string, firstSeen: number): void {
    if (this.#pending.size === 0 && !this.#overflow) this.#batchStart = Date.now();
    if (this.#overflow) {
      this.#schedule();
      return;
    }
    const seen = this.#pending.get(rel);
    this.#pending.set(rel, seen === undefined ? firstSeen : Math.min(seen, firstSeen));
    if (this.#pending.size > this.#maxPending) this.#overflowed();
    else this.#schedule();
  }

  #schedule(): void {
    if (this.#closed || this.#flushing) return;
    if (this.#pending.size === 0 && !this.#overflow) return;
    const deadline = this.#batchStart + this.#maxDelayMs;
    const delay = Math.max(0, Math.min(this.#debounceMs, deadline - Date.now()));
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed || this.#flushing) return;
      this.#flushing = this.#flush()
        .catch((e) => this.#onError(e))
        .finally(() => {
          this.#flushing = null;
          this.#schedule();
        });
    }, delay);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const s: Sleeper = {
        timer: setTimeout(() => {
          this.#sleepers.delete(s);
          resolve();
        }, ms),
        resolve,
      };
      this.#sleepers.add(s);
    });
  }

  #lstat(rel: string): Deno.FileInfo | null {
    try {
      return Deno.lstatSync(`${this.root}/${rel}`);
    } catch {
      return null;
    }
  }

  /**
   * Drop expired announcements. They are kept in the order they were made (expect() re-inserts
   * a path it already holds), all with the same lifetime, so the expired ones come first: the
   * sweep stops at the first live one. (It used to look at every entry, on every expect(): with
   * thousands of files written at once, 13 % of the writer's main thread.)
   */
  #purgeExpected(now: number): void {
    for (const [path, e] of this.#expected) {
      if (e.until > now) break;
      this.#expected.delete(path);
    }
  }

  /** Whether the path now looks exactly like an announced own write. */
  #isOwnWrite(rel: string, info: Deno.FileInfo | null): boolean {
    const e = this.#expected.get(rel)?.entry;
    if (!e) return false;
    switch (e.kind) {
      case "absent":
        return info === null;
      case "dir":
        return info !== null && info.isDirectory;
      case "symlink":
        if (info === null || !info.isSymlink) return false;
        if (e.target === undefined) return true;
        try {
          return Deno.readLinkSync(`${this.root}/${rel}`) === e.target;
        } catch {
          return false;
        }
      case "file": {
        if (info === null || !info.isFile) return false;
        const f = statFields(info);
        return f.size === e.size && f.mtime === e.mtime;
      }
    }
  }

  async #flush(): Promise<void> {
    const taken = this.#pending;
    const overflow = this.#overflow;
    this.#pending = new Map();
    this.#overflow = false;
    const now = Date.now();
    this.#purgeExpected(now);

    const stats = new Map<string, Deno.FileInfo | null>();
    const unsettled: string[] = [];
    for (const [rel, firstSeen] of taken) {
      const info = this.#lstat(rel);
      stats.set(rel, info);
      const recent = info !== null && info.isFile && now - statFields(info).mtime < this.#settleMs;
      if (recent && now - firstSeen < this.#maxDelayMs) unsettled.push(rel);
    }
    const retry: string[] = [];
    if (unsettled.length > 0) {
      await this.#sleep(this.#settleMs);
      if (this.#closed) return;
      for (const rel of unsettled) {
        const before = stats.get(rel)!;
        const after = this.#lstat(rel);
        stats.set(rel, after);
        const a = statFields(before);
        const b = after === null ? null : statFields(after);
        if (b === null || b.size !== a.size || b.mtime !== a.mtime) retry.push(rel);
      }
    }
    const retrySet = new Set(retry);
    const paths: string[] = [];
    for (const rel of taken.keys()) {
      if (retrySet.has(rel)) continue;
      if (this.#isOwnWrite(rel, stats.get(rel) ?? null)) continue;
      paths.push(rel);
    }
    for (const rel of retry) this.#addRelative(rel, taken.get(rel)!);
    if (paths.length === 0 && !overflow) return;
    paths.sort();
    try {
      await this.#onBatch({ paths, overflow });
    } catch (e) {
      this.#onError(e);
    }
  }
}
