/**
 * Kernel copies of byte ranges between files (Linux copy_file_range(2), through Deno's FFI):
 * the bytes never pass through JavaScript, and on file systems that support it (XFS, Btrfs,
 * NFS 4.2) they are shared instead of copied. Deno.copyFile copies whole files only; an edit
 * that shifts the tail of a large file (an insert) needs the tail copied to another offset.
 *
 * Where the call is not available (not Linux, no FFI permission, no libc, or a file system
 * that refuses it), copyRange returns false and the caller copies the bytes itself.
 */

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32", nonblocking: true },
  close: { parameters: ["i32"], result: "i32" },
  copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "isize",
    nonblocking: true,
  },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Linux open(2) flags. */
const O_RDONLY = 0;
const O_WRONLY = 1;
const O_CLOEXEC = 0o2000000;

/** Bytes asked of one copy_file_range call (it may copy fewer). */
const STEP_BYTES = 1 << 30;

let libc: Libc | null | undefined;

function load(): Libc | null {
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

/** Whether copyRange can work here (Linux, FFI allowed, libc found). */
export function canCopyRanges(): boolean {
  return load() !== null;
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * Copy `length` bytes of the file at `src`, from `srcOffset`, into the existing file at `dst`
 * at `dstOffset`, in the kernel. Returns false (having maybe copied part) when the kernel copy
 * is not available or fails; the caller then writes the range itself.
 */
export async function copyRange(
  src: string,
  srcOffset: number,
  dst: string,
  dstOffset: number,
  length: number,
): Promise<boolean> {
  const c = load();
  if (c === null) return false;
  const inFd = await c.open(cString(src), O_RDONLY | O_CLOEXEC, 0);
  if (inFd < 0) return false;
  try {
    const outFd = await c.open(cString(dst), O_WRONLY | O_CLOEXEC, 0);
    if (outFd < 0) return false;
    try {
      const inOff = new BigInt64Array([BigInt(srcOffset)]);
      const outOff = new BigInt64Array([BigInt(dstOffset)]);
      let left = length;
      while (left > 0) {
        const n = Number(
          await c.copy_file_range(
            inFd,
            inOff,
            outFd,
            outOff,
            BigInt(Math.min(left, STEP_BYTES)),
            0,
          ),
        );
        if (n <= 0) return false; // an error, or the source ended early
        left -= n;
      }
      return true;
    } finally {
      c.close(outFd);
    }
  } finally {
    c.close(inFd);
  }
}
