/**
 * Files opened for reads at given offsets (pread(2) through Deno's FFI): reads on one handle
 * may run at once, none moves a shared file offset. Deno.FsFile has no positional read, so
 * each read there is a seek and a read, two trips to the blocking thread pool, and reads on one
 * handle must wait for each other. Serving 256 MiB of 64 KiB chunks cost about 350 ms of CPU
 * that way and about 170 ms with pread on the thread pool (scratch bench here, page cache warm).
 *
 * Bytes already in the page cache are read at once, on the calling thread: preadv2 with
 * RWF_NOWAIT copies what the cache holds and never waits for the disk. Only the rest goes to
 * the thread pool. A server's reads of recently written files are nearly all cached, and a
 * threaded call costs the event loop more than the copy itself (it was a third of a serving
 * node's main thread in a profile; about 50 ms of CPU for 256 MiB this way).
 *
 * Where FFI is not available (see libc.ts), the same interface runs on a Deno.FsFile, one
 * seek-and-read at a time.
 */
import { cString, type Libc, loadLibc, O_CLOEXEC, O_RDONLY, RWF_NOWAIT } from "./libc.ts";
import { readAt } from "./read_at.ts";

/** A file opened for positional reads. */
export interface PositionalFile {
  /** Fill `buf` from offset `pos`; false if the file ends first. */
  readAt(pos: number, buf: Uint8Array): Promise<boolean>;
  /** Close the file once the reads already started are done; later reads fail. */
  close(): void;
}

/**
 * Open `path` for positional reads. Throws as Deno.open does (Deno.errors.NotFound, ...) if
 * the file cannot be opened. `ffi: false` takes the fallback even where pread is available.
 */
export async function openPositional(
  path: string,
  opts: { ffi?: boolean } = {},
): Promise<PositionalFile> {
  const c = opts.ffi === false ? null : loadLibc();
  if (c !== null) {
    const fd = await c.open(cString(path), O_RDONLY | O_CLOEXEC, 0);
    if (fd >= 0) return new LibcFile(c, fd, path);
    // Deno.open throws the error that explains why (or, if the file appeared meanwhile,
    // serves it through the fallback).
  }
  return new SeekingFile(path, await Deno.open(path, { read: true }));
}

/** pread on a file descriptor; the descriptor is closed only once no read uses it. */
class LibcFile implements PositionalFile {
  #reading = 0;
  #closed = false;

  constructor(
    private readonly libc: Libc,
    private readonly fd: number,
    private readonly path: string,
  ) {}

  async readAt(pos: number, buf: Uint8Array): Promise<boolean> {
    if (this.#closed) throw new Deno.errors.BadResource(`${this.path} is closed`);
    this.#reading++;
    try {
      let read = this.#fromCache(pos, buf);
      while (read < buf.length) {
        const n = Number(
          await this.libc.pread(
            this.fd,
            buf.subarray(read),
            BigInt(buf.length - read),
            BigInt(pos + read),
          ),
        );
        if (n < 0) throw new Error(`reading ${this.path} at offset ${pos + read} failed`);
        if (n === 0) return false;
        read += n;
      }
      return true;
    } finally {
      // A descriptor closed under a running read could be reused by another open meanwhile.
      if (--this.#reading === 0 && this.#closed) this.libc.close(this.fd);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#reading === 0) this.libc.close(this.fd);
  }

  /** Bytes of `buf` filled from the page cache, without waiting for the disk (0: none). */
  #fromCache(pos: number, buf: Uint8Array): number {
    const preadv2 = this.libc.preadv2;
    if (preadv2 === null || buf.length === 0) return 0;
    let read = 0;
    while (read < buf.length) {
      const part = buf.subarray(read);
      // One iovec: the buffer's address and length. The call is synchronous, so the buffer
      // cannot move or be collected meanwhile.
      IOVEC[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(part)));
      IOVEC[1] = BigInt(part.length);
      const n = Number(preadv2(this.fd, IOVEC, 1, BigInt(pos + read), RWF_NOWAIT));
      // -1: not cached (EAGAIN), or no RWF_NOWAIT here; 0: end of file. Either way the
      // threaded read takes over, and reports errors and the end properly.
      if (n <= 0) break;
      read += n;
    }
    return read;
  }
}

/** The iovec preadv2 is given (calls are synchronous and never overlap). */
const IOVEC = new BigUint64Array(2);

/** Handles the fallback opens per file at most, each reading one at a time. */
const SEEKING_LANES = 4;

/** One handle of the fallback and the reads queued on it (a seek and a read must not interleave). */
interface Lane {
  file: Promise<Deno.FsFile>;
  queue: Promise<unknown>;
}

/**
 * The fallback: seek and read on Deno.FsFile handles. Reads on one handle run one after
 * another; up to SEEKING_LANES handles, opened as reads come, take reads in turn, so many small
 * reads (a push of thousands of tiny objects from one pack) do not all wait in one line.
 */
class SeekingFile implements PositionalFile {
  readonly #lanes: Lane[];
  #next = 0;
  #closed = false;

  constructor(private readonly path: string, first: Deno.FsFile) {
    this.#lanes = [{ file: Promise.resolve(first), queue: Promise.resolve() }];
  }

  readAt(pos: number, buf: Uint8Array): Promise<boolean> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource(`${this.path} is closed`));
    }
    const lane = this.#lane();
    const run = lane.queue.then(async () => readAt(await lane.file, pos, buf));
    lane.queue = run.catch(() => {});
    return run;
  }

  /** The next lane in turn, opening another handle while there are fewer than the most. */
  #lane(): Lane {
    if (this.#lanes.length < SEEKING_LANES) {
      // A handle that cannot be opened (the file was removed meanwhile) fails the reads queued
      // on it, as a read through the first handle of a removed file would not: try the first.
      const first = this.#lanes[0].file;
      const file = Deno.open(this.path, { read: true }).catch(() => first);
      this.#lanes.push({ file, queue: Promise.resolve() });
    }
    return this.#lanes[this.#next++ % this.#lanes.length];
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const handles = new Set<Deno.FsFile>();
    Promise.all(this.#lanes.map(async (lane) => {
      await lane.queue;
      handles.add(await lane.file);
    })).finally(() => {
      for (const f of handles) {
        try {
          f.close();
        } catch { /* already closed */ }
      }
    });
  }
}
