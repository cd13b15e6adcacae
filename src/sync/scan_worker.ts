/**
 * A scan worker: hashes files sent by the scanner so a tree of many files uses every core.
 * Message in: { id, absPath, options, previous? }. Messages out: any number of { id, chunks } while the
 * file is read (so a huge file's chunk list never piles up), then { id, ok: true, result } or
 * { id, ok: false, code, message }.
 */
/// <reference lib="deno.worker" />
import { hashFile, HashFileError } from "./hash_file.ts";

self.onmessage = async (event: MessageEvent) => {
  const { id, absPath, options, previous } = event.data;
  try {
    const result = await hashFile(
      absPath,
      options,
      (chunks) => self.postMessage({ id, chunks }),
      previous,
    );
    self.postMessage({ id, ok: true, result });
  } catch (e) {
    const code = e instanceof HashFileError ? e.code : "unreadable";
    self.postMessage({ id, ok: false, code, message: (e as Error).message });
  }
};
