/**
 * Positional reads on a Deno.FsFile, which has no pread: a seek, then reads until the buffer
 * is full. Callers sharing a handle must not interleave two of these.
 */

/** Fill `buf` from `file` at `pos`; false if the file ends first. */
export async function readAt(file: Deno.FsFile, pos: number, buf: Uint8Array): Promise<boolean> {
  await file.seek(pos, Deno.SeekMode.Start);
  let read = 0;
  while (read < buf.length) {
    const n = await file.read(buf.subarray(read));
    if (n === null) return false;
    read += n;
  }
  return true;
}

/** Exactly `length` bytes of `file` at `offset`, or null if the file is shorter. */
export async function readBytesAt(
  file: Deno.FsFile,
  offset: number,
  length: number,
): Promise<Uint8Array | null> {
  const out = new Uint8Array(length);
  return (await readAt(file, offset, out)) ? out : null;
}
