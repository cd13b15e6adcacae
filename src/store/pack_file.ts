/**
 * Low-level reading of pack files, shared by normal reads and by compaction.
 *
 * Pack record layout: `u32 big-endian payload length | 32-byte SHA-256 | payload`.
 */
import { type Hash, HASH_LENGTH, hashEquals } from "../chunk/hash.ts";
import { CorruptObjectError } from "./errors.ts";
import type { ObjectLocation } from "./schema.ts";
import { type PositionalFile, readAt } from "../util/mod.ts";

/** Bytes before each payload: length and hash. */
export const RECORD_HEADER = 4 + HASH_LENGTH;
/** Largest object accepted: a maximum-size chunk with room to spare. */
export const MAX_OBJECT_BYTES = 16 * 1024 * 1024;

/** Pack file name for pack number n. */
export function packName(n: number): string {
  return `pack-${String(n).padStart(6, "0")}.pack`;
}

/** The pack number of a file name, or null if it is not a pack. */
export function packNumber(name: string): number | null {
  const m = /^pack-(\d{6})\.pack$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** An object and where its record lies. */
export interface PackedObject {
  hash: Hash;
  loc: ObjectLocation;
}

/**
 * Read one record at `loc` and check its header against the hash and length the index gives.
 * The payload is returned unhashed; callers hash it (one place, so it is never skipped).
 */
export async function readRecord(
  file: Pick<PositionalFile, "readAt">,
  hash: Hash,
  loc: ObjectLocation,
): Promise<Uint8Array> {
  const record = new Uint8Array(RECORD_HEADER + loc.length);
  if (!(await file.readAt(loc.offset - RECORD_HEADER, record))) {
    throw new CorruptObjectError(hash, `pack ${packName(loc.pack)} truncated`);
  }
  const view = new DataView(record.buffer);
  if (view.getUint32(0) !== loc.length || !hashEquals(record.subarray(4, RECORD_HEADER), hash)) {
    throw new CorruptObjectError(hash, `record header in ${packName(loc.pack)} does not match`);
  }
  return record.subarray(RECORD_HEADER);
}

/** What walking a pack's records found. */
export interface PackWalk {
  records: PackedObject[];
  /**
   * Whether the record chain ended exactly at the end of the range. If not (a torn append
   * after a crash, or a damaged length field), records past the break were not seen.
   */
  clean: boolean;
}

/** Headers are read in blocks this large, so packs of small objects cost few reads. */
const WALK_BLOCK_BYTES = 256 * 1024;

/**
 * List the records of pack `pack` between byte `from` (a record boundary) and `to`, reading
 * only headers. Records are self-describing, so this needs no index.
 */
export async function walkPack(
  file: Deno.FsFile,
  pack: number,
  from: number,
  to: number,
): Promise<PackWalk> {
  const records: PackedObject[] = [];
  let block = new Uint8Array(0);
  let blockStart = 0;
  let pos = from;
  while (pos < to) {
    if (to - pos < RECORD_HEADER) return { records, clean: false };
    if (pos < blockStart || pos + RECORD_HEADER > blockStart + block.length) {
      const want = Math.min(WALK_BLOCK_BYTES, to - pos);
      const buf = new Uint8Array(want);
      if (!(await readAt(file, pos, buf))) return { records, clean: false };
      block = buf;
      blockStart = pos;
    }
    const at = pos - blockStart;
    const length = new DataView(block.buffer, block.byteOffset + at, 4).getUint32(0);
    if (length > MAX_OBJECT_BYTES || pos + RECORD_HEADER + length > to) {
      return { records, clean: false };
    }
    records.push({
      hash: block.slice(at + 4, at + RECORD_HEADER),
      loc: { pack, offset: pos + RECORD_HEADER, length },
    });
    pos += RECORD_HEADER + length;
  }
  return { records, clean: true };
}
