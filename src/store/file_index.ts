/**
 * The local file index: what the last scan saw at each path (kind, size, mtime, mode, inode,
 * content root). It lets a rescan skip every file whose size, mtime and inode are unchanged,
 * so an unchanged tree is rescanned without reading file content.
 */
import type { KvBatch } from "./kv_batch.ts";
import {
  FILE_PREFIX,
  fileKey,
  loadRecordsUnder,
  type LocalFileRecord,
  metaKey,
  parseLocalFileRecord,
} from "./schema.ts";
import type { Hash } from "../chunk/hash.ts";
import { LIST_ALL_BATCH } from "../util/mod.ts";

/** The last completed scan's summary. */
export interface ScanSummary {
  root: Hash;
  files: number;
  bytes: number;
  /** When the scan finished, ms since the epoch. */
  time: number;
  /** When it started: files modified after this are re-read by the next scan. */
  start: number;
}

/** Read and write access to the file index kept in Deno KV. */
export class FileIndex {
  constructor(private readonly kv: Deno.Kv) {}

  /** The record for one path, or null. */
  async get(path: string): Promise<LocalFileRecord | null> {
    const entry = await this.kv.get(fileKey(path));
    return entry.value === null ? null : parseLocalFileRecord(entry.value);
  }

  /** Every record, in key order. */
  async *list(): AsyncGenerator<[string, LocalFileRecord]> {
    for await (
      const entry of this.kv.list({ prefix: FILE_PREFIX }, { batchSize: LIST_ALL_BATCH })
    ) {
      yield [entry.key[1] as string, parseLocalFileRecord(entry.value)];
    }
  }

  /** All records in a Map (the scanner compares against it in one pass). */
  async loadAll(): Promise<Map<string, LocalFileRecord>> {
    const out = new Map<string, LocalFileRecord>();
    for await (const [path, rec] of this.list()) out.set(path, rec);
    return out;
  }

  /**
   * The records of these paths and of everything below them (a path may name a directory).
   * Reads only those: a scan of a few reported paths need not read a whole tree's records.
   */
  loadUnder(paths: readonly string[]): Promise<Map<string, LocalFileRecord>> {
    return loadRecordsUnder(this.kv, FILE_PREFIX, paths, parseLocalFileRecord);
  }

  /** Queue a record. */
  put(batch: KvBatch, path: string, rec: LocalFileRecord): Promise<void> {
    return batch.set(fileKey(path), rec);
  }

  /** Queue removal of a path's record. */
  remove(batch: KvBatch, path: string): Promise<void> {
    return batch.delete(fileKey(path));
  }

  /** The summary of the last completed scan, or null before the first. */
  async lastScan(): Promise<ScanSummary | null> {
    const entry = await this.kv.get<ScanSummary>(metaKey("lastScan"));
    return entry.value;
  }

  /** Queue the summary of a completed scan (written last, after everything it covers). */
  setLastScan(batch: KvBatch, summary: ScanSummary): Promise<void> {
    return batch.set(metaKey("lastScan"), summary);
  }
}
