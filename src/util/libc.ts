/**
 * The few libc calls Deno has no API for, through Deno's FFI: copy_file_range(2) for kernel
 * copies (copy_range.ts), pread(2) for positional reads (positional_file.ts) and inotify(7)
 * for watching a tree without Deno's per-event path checks (sync/inotify.ts). Null where
 * they cannot be had (not Linux, no FFI permission, no libc): callers then fall back to
 * Deno's own file API.
 */

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32", nonblocking: true },
  close: { parameters: ["i32"], result: "i32" },
  copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "isize",
    nonblocking: true,
  },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  // Synchronous, for RWF_NOWAIT reads only (bytes in the page cache, or nothing): glibc 2.26+.
  preadv2: { parameters: ["i32", "buffer", "i32", "i64", "i32"], result: "isize", optional: true },
  // inotify (inotify.ts): the descriptor is non-blocking, read() is synchronous and poll()
  // waits on a worker thread; a pipe wakes that poll when the watch is closed.
  inotify_init1: { parameters: ["i32"], result: "i32", optional: true },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32", optional: true },
  inotify_rm_watch: { parameters: ["i32", "i32"], result: "i32", optional: true },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** The loaded calls; `nonblocking` ones run on a worker thread and return promises. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** preadv2(2) flag: read only what the page cache holds, never wait for the disk. */
export const RWF_NOWAIT = 0x8;

/** Linux open(2) flags. */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_CLOEXEC = 0o2000000;

let libc: Libc | null | undefined;

/** libc's calls, loaded once; null where FFI or libc is not available. */
export function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") return libc;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return libc;
    libc = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  } catch {
    libc = null;
  }
  return libc;
}

/** errno of the last failed call on this thread (read it right after the call). */
export function lastErrno(c: Libc): number {
  const p = c.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** A NUL-terminated copy of a path, as C calls take it. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
