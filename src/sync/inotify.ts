/**
 * A recursive watch of a directory tree through Linux inotify(7), called through Deno's FFI.
 *
 * Why not Deno.watchFs: for every event, Deno checks the event's path against the watched one
 * by opening both and resolving both with realpath (about a dozen system calls). Writing 1,000
 * small files raised some 9,500 events (a temp file is created, written, chmod'ed, timed,
 * closed and renamed), and the check cost the receiving node about 0.35 CPU-seconds of a
 * 5-second initial sync, on top of the events of its own `.filesync/` writes, which the
 * watcher then dropped. Here an event costs a few bytes of parsing, and `.filesync/` is not
 * watched at all.
 *
 * One watch per directory (inotify is not recursive): a directory created or moved in is
 * watched as soon as its event is read, and everything already in it is reported, since it may
 * have been written before the watch existed. A directory moved away loses its watches (the
 * kernel would keep reporting its events under the old path). A queue overflow is reported as
 * `rescan` (events were lost) and every directory is watched again. Past the system's watch
 * limit (fs.inotify.max_user_watches), the directories left out are reported once through
 * `onError`; the periodic rescan still finds their changes.
 */
import { cString, lastErrno, type Libc, loadLibc } from "../util/libc.ts";

/** Changes read at once from the kernel. */
export interface TreeEvents {
  /** Absolute paths that changed (a directory's own path for events on itself). */
  paths: string[];
  /** Events were lost: the caller should rescan everything. */
  rescan: boolean;
}

/** What a tree watch (InotifyTree or Deno.watchFs, see watchTree) gives the watcher. */
export interface TreeWatch extends AsyncIterable<TreeEvents> {
  close(): void;
}

const IN_MODIFY = 0x2;
const IN_ATTRIB = 0x4;
const IN_CLOSE_WRITE = 0x8;
const IN_MOVED_FROM = 0x40;
const IN_MOVED_TO = 0x80;
const IN_CREATE = 0x100;
const IN_DELETE = 0x200;
const IN_DELETE_SELF = 0x400;
const IN_MOVE_SELF = 0x800;
const IN_Q_OVERFLOW = 0x4000;
const IN_IGNORED = 0x8000;
const IN_ONLYDIR = 0x01000000;
const IN_DONT_FOLLOW = 0x02000000;
const IN_ISDIR = 0x40000000;
const IN_NONBLOCK = 0o4000;
const IN_CLOEXEC = 0o2000000;
const POLLIN = 1;
const EINTR = 4;
const EAGAIN = 11;
const ENOSPC = 28;

/** Events each directory is watched for; IN_DONT_FOLLOW: a symlink is never entered. */
const WATCH_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
  IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW;

/** poll() failures in a row before the watch gives up. */
const MAX_FAILED_POLLS = 100;

/** Bytes read from the inotify descriptor at once (an event is 16 bytes plus its name). */
const READ_BYTES = 64 * 1024;

/** Options of InotifyTree.open. */
export interface InotifyOptions {
  /** Directories (relative POSIX paths) never watched, with everything under them. */
  exclude?: (relDir: string) => boolean;
  /** A directory that could not be watched for lack of watches (reported once). */
  onError?: (error: Error) => void;
}

/** An error of an inotify call, with the errno it failed with. */
export class InotifyError extends Error {
  constructor(message: string, readonly errno: number) {
    super(message);
    this.name = "InotifyError";
  }
}

/** A recursive inotify watch of one directory tree; iterate it once, close() to end. */
export class InotifyTree implements TreeWatch {
  readonly #c: Libc;
  readonly #fd: number;
  readonly #wakeRead: number;
  readonly #wakeWrite: number;
  readonly #root: string;
  readonly #exclude: (relDir: string) => boolean;
  readonly #onError: (error: Error) => void;
  readonly #pathOf = new Map<number, string>();
  readonly #wdOf = new Map<string, number>();
  readonly #decoder = new TextDecoder();
  #closed = false;
  #iterating = false;
  #fdsClosed = false;
  #limitReported = false;

  /**
   * Watch `root` (an absolute, resolved path) and every directory under it. Null where inotify
   * cannot be had (not Linux, no FFI permission): the caller falls back to Deno.watchFs.
   */
  static open(root: string, options: InotifyOptions = {}): InotifyTree | null {
    const c = loadLibc();
    if (c === null || c.inotify_init1 === null || c.inotify_add_watch === null) return null;
    const fd = c.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return null;
    const pipe = new Int32Array(2);
    if (c.pipe2(pipe, IN_NONBLOCK | IN_CLOEXEC) !== 0) {
      c.close(fd);
      return null;
    }
    const tree = new InotifyTree(c, fd, pipe[0], pipe[1], root, options);
    try {
      if (!tree.#watch(root, null)) {
        throw new InotifyError(`cannot watch ${root}`, lastErrno(c));
      }
    } catch (e) {
      tree.#closeFds();
      throw e;
    }
    return tree;
  }

  private constructor(
    c: Libc,
    fd: number,
    wakeRead: number,
    wakeWrite: number,
    root: string,
    options: InotifyOptions,
  ) {
    this.#c = c;
    this.#fd = fd;
    this.#wakeRead = wakeRead;
    this.#wakeWrite = wakeWrite;
    this.#root = root;
    this.#exclude = options.exclude ?? (() => false);
    this.#onError = options.onError ?? ((e) => console.error("inotify:", e.message));
  }

  /** Directories watched now (for tests and status). */
  get watchCount(): number {
    return this.#pathOf.size;
  }

  /** End the watch: a pending iteration returns, and the descriptors are closed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#iterating) this.#c.write(this.#wakeWrite, new Uint8Array(1), 1n);
    else this.#closeFds();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TreeEvents> {
    if (this.#iterating) throw new Error("an InotifyTree is iterated once");
    this.#iterating = true;
    const fds = new Int32Array(4); // two struct pollfd { int fd; short events, revents; }
    const view = new DataView(fds.buffer);
    const buf = new Uint8Array(READ_BYTES);
    let failedPolls = 0;
    try {
      while (!this.#closed) {
        fds[0] = this.#fd;
        view.setInt16(4, POLLIN, true);
        view.setInt16(6, 0, true);
        fds[2] = this.#wakeRead;
        view.setInt16(12, POLLIN, true);
        view.setInt16(14, 0, true);
        const ready = await this.#c.poll(fds, 2n, -1);
        if (this.#closed) break;
        if (ready < 0) {
          // poll ran on a worker thread, whose errno is out of reach: a signal (EINTR) is
          // the expected cause, anything that persists is not.
          if (++failedPolls > MAX_FAILED_POLLS) {
            throw new InotifyError("poll on the inotify descriptor keeps failing", 0);
          }
          continue;
        }
        failedPolls = 0;
        const events = this.#readAll(buf);
        if (events.paths.length > 0 || events.rescan) yield events;
      }
    } finally {
      this.#closed = true;
      this.#closeFds();
    }
  }

  /** Read and interpret every queued event. */
  #readAll(buf: Uint8Array): TreeEvents {
    const out: TreeEvents = { paths: [], rescan: false };
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (;;) {
      const n = Number(this.#c.read(this.#fd, buf, BigInt(buf.length)));
      if (n < 0) {
        const errno = lastErrno(this.#c);
        if (errno === EINTR) continue;
        if (errno === EAGAIN) return out;
        throw new InotifyError("read from the inotify descriptor failed", errno);
      }
      if (n === 0) return out;
      let off = 0;
      while (off + 16 <= n) {
        const wd = view.getInt32(off, true);
        const mask = view.getUint32(off + 4, true);
        const len = view.getUint32(off + 12, true);
        let name = "";
        if (len > 0) {
          const raw = buf.subarray(off + 16, off + 16 + len);
          const end = raw.indexOf(0);
          name = this.#decoder.decode(end < 0 ? raw : raw.subarray(0, end));
        }
        off += 16 + len;
        this.#interpret(wd, mask, name, out);
      }
    }
  }

  #interpret(wd: number, mask: number, name: string, out: TreeEvents): void {
    if (mask & IN_Q_OVERFLOW) {
      // Events were lost, directory creations among them perhaps: watch everything again.
      out.rescan = true;
      this.#watch(this.#root, null);
      return;
    }
    const dir = this.#pathOf.get(wd);
    if (dir === undefined) return; // a watch already given up (a directory moved away)
    if (mask & IN_IGNORED) {
      this.#forget(wd);
      return;
    }
    if (name === "") {
      out.paths.push(dir);
      // The root itself deleted or moved: nothing under it can be trusted.
      if (dir === this.#root && (mask & (IN_DELETE_SELF | IN_MOVE_SELF))) out.rescan = true;
      return;
    }
    const path = `${dir}/${name}`;
    out.paths.push(path);
    if (!(mask & IN_ISDIR)) return;
    if (mask & IN_MOVED_FROM) this.#unwatch(path);
    if (mask & (IN_CREATE | IN_MOVED_TO)) this.#watch(path, out.paths);
  }

  /**
   * Watch `top` and every directory under it (not excluded, not through symlinks); with `found`,
   * add every path found under `top` to it. False if `top` itself could not be watched.
   */
  #watch(top: string, found: string[] | null): boolean {
    if (this.#excluded(top) || !this.#addWatch(top)) return false;
    // Each directory is watched before it is listed, so nothing made in it goes unseen.
    const stack = [top];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      let entries: Deno.DirEntry[];
      try {
        entries = [...Deno.readDirSync(dir)];
      } catch {
        continue; // gone again, or unreadable: its own events say so
      }
      for (const e of entries) {
        const path = `${dir}/${e.name}`;
        found?.push(path);
        if (e.isDirectory && !this.#excluded(path) && this.#addWatch(path)) stack.push(path);
      }
    }
    return true;
  }

  #excluded(path: string): boolean {
    return path !== this.#root && this.#exclude(path.slice(this.#root.length + 1));
  }

  #addWatch(dir: string): boolean {
    const wd = this.#c.inotify_add_watch!(this.#fd, cString(dir), WATCH_MASK);
    if (wd < 0) {
      const errno = lastErrno(this.#c);
      if (errno === ENOSPC && !this.#limitReported) {
        this.#limitReported = true;
        this.#onError(
          new InotifyError(
            `out of inotify watches at ${dir} (raise fs.inotify.max_user_watches): ` +
              "changes in the directories left unwatched are found by the periodic rescan",
            errno,
          ),
        );
      }
      return false;
    }
    // The same directory seen again (a rewatch after an overflow) keeps its descriptor.
    const before = this.#pathOf.get(wd);
    if (before !== undefined && before !== dir && this.#wdOf.get(before) === wd) {
      this.#wdOf.delete(before);
    }
    this.#pathOf.set(wd, dir);
    this.#wdOf.set(dir, wd);
    return true;
  }

  /** Stop watching `top` and everything under it (it moved away: its paths are stale). */
  #unwatch(top: string): void {
    const prefix = `${top}/`;
    for (const [path, wd] of this.#wdOf) {
      if (path !== top && !path.startsWith(prefix)) continue;
      this.#c.inotify_rm_watch!(this.#fd, wd);
      this.#forget(wd);
    }
  }

  #forget(wd: number): void {
    const path = this.#pathOf.get(wd);
    this.#pathOf.delete(wd);
    if (path !== undefined && this.#wdOf.get(path) === wd) this.#wdOf.delete(path);
  }

  #closeFds(): void {
    if (this.#fdsClosed) return;
    this.#fdsClosed = true;
    this.#c.close(this.#fd);
    this.#c.close(this.#wakeRead);
    this.#c.close(this.#wakeWrite);
    this.#pathOf.clear();
    this.#wdOf.clear();
  }
}

/**
 * Watch a directory tree: through inotify where it can be had (unless `denoWatch`), else
 * through Deno.watchFs (whose events carry no exclusions: the caller filters them).
 */
export function watchTree(
  root: string,
  options: InotifyOptions & { denoWatch?: boolean } = {},
): TreeWatch {
  const tree = options.denoWatch ? null : InotifyTree.open(root, options);
  if (tree !== null) return tree;
  const fs = Deno.watchFs(root, { recursive: true });
  return {
    close: () => fs.close(),
    async *[Symbol.asyncIterator]() {
      for await (const e of fs) yield { paths: e.paths, rescan: e.flag === "rescan" };
    },
  };
}
