/**
 * Kernel copies of byte ranges between files (Linux copy_file_range(2), through Deno's FFI):
 * the bytes never pass through JavaScript, and on file systems that support it (XFS, Btrfs,
 * NFS 4.2) they are shared instead of copied. Deno.copyFile copies whole files only; an edit
 * that shifts the tail of a large file (an insert) needs the tail copied to another offset.
 *
 * Where the call is not available (not Linux, no FFI permission, no libc, or a file system
 * that refuses it), copyRange returns false and the caller copies the bytes itself.
 */

import { cString, loadLibc as load, O_CLOEXEC, O_RDONLY, O_WRONLY } from "./libc.ts";

/** Bytes asked of one copy_file_range call (it may copy fewer). */
const STEP_BYTES = 1 << 30;

/** Whether copyRange can work here (Linux, FFI allowed, libc found). */
export function canCopyRanges(): boolean {
  return load() !== null;
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
