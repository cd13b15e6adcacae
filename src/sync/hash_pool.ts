/**
 * A pool of scan workers. Files are handed to whichever worker is free, so hashing a tree of
 * many files keeps every core busy while the main thread writes the index.
 */
import type { Chunk, ChunkerOptions } from "../chunk/mod.ts";
import { type ChunkSink, type HashedFile, hashFile, HashFileError } from "./hash_file.ts";

interface Job {
  id: number;
  absPath: string;
  onChunks: ChunkSink;
  previous?: readonly Chunk[];
  /** Bytes the file had when listed (0 if unknown). */
  size: number;
  resolve: (r: HashedFile) => void;
  reject: (e: Error) => void;
}

/**
 * Jobs a worker holds at once. A small file takes a worker less time (about 60 us) than a
 * round trip to the main thread and back, so with one job each the workers sat idle about
 * half of a scan of small files: each now has the next ones queued already.
 */
const PIPELINE_DEPTH = 4;

/** Hashes files on worker threads, or inline on the calling thread when `size` is 0. */
export class HashPool {
  #workers: Worker[] = [];
  #queue: Job[] = [];
  /** The jobs each worker holds, by id, and their bytes. */
  #held = new Map<Worker, { jobs: Map<number, Job>; bytes: number }>();
  #nextId = 1;
  #closed = false;

  /**
   * Start `size` workers. With 0, files are hashed inline: starting a worker costs more than
   * hashing a few small files.
   */
  constructor(private readonly size: number, private readonly options: Partial<ChunkerOptions>) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL("./scan_worker.ts", import.meta.url).href, { type: "module" });
      w.onmessage = (e: MessageEvent) => this.#done(w, e.data);
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        this.#crashed(w, e.message);
      };
      this.#workers.push(w);
      this.#held.set(w, { jobs: new Map(), bytes: 0 });
    }
  }

  /**
   * Hash one file, streaming its chunks to `onChunks`; rejects with HashFileError. `previous`:
   * the chunks of the version it replaces, as hashFile takes them. `size` (the file's size as
   * last seen) steers the job to the least loaded worker: small files do not queue behind a
   * large one while another worker has room.
   */
  hash(
    absPath: string,
    onChunks: ChunkSink,
    previous?: readonly Chunk[],
    size = 0,
  ): Promise<HashedFile> {
    if (this.#closed) return Promise.reject(new Error("hash pool closed"));
    // No workers asked for, or none left (see #crashed): hash on this thread.
    if (this.#held.size === 0) return hashFile(absPath, this.options, onChunks, previous);
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      this.#queue.push({ id, absPath, onChunks, previous, size, resolve, reject });
      this.#pump();
    });
  }

  /** Jobs waiting or running. */
  get backlog(): number {
    let held = 0;
    for (const h of this.#held.values()) held += h.jobs.size;
    return this.#queue.length + held;
  }

  #pump(): void {
    while (this.#queue.length > 0) {
      let target: Worker | null = null;
      for (const [w, h] of this.#held) {
        if (h.jobs.size >= PIPELINE_DEPTH) continue;
        const best = target && this.#held.get(target)!;
        if (
          !best || h.bytes < best.bytes || (h.bytes === best.bytes && h.jobs.size < best.jobs.size)
        ) {
          target = w;
        }
      }
      if (!target) return;
      const job = this.#queue.shift()!;
      const held = this.#held.get(target)!;
      held.jobs.set(job.id, job);
      held.bytes += job.size;
      target.postMessage({
        id: job.id,
        absPath: job.absPath,
        options: this.options,
        previous: job.previous,
      });
    }
  }

  #done(
    w: Worker,
    msg: {
      id: number;
      chunks?: HashedFile["chunks"];
      ok?: boolean;
      result?: HashedFile;
      code?: string;
      message?: string;
    },
  ): void {
    const held = this.#held.get(w);
    const job = held?.jobs.get(msg.id);
    if (!held || !job) return;
    if (msg.chunks) {
      job.onChunks(msg.chunks);
      return;
    }
    held.jobs.delete(msg.id);
    held.bytes -= job.size;
    if (msg.ok) job.resolve(msg.result!);
    else job.reject(new HashFileError(msg.code as HashFileError["code"], msg.message!));
    this.#pump();
  }

  /**
   * A worker failed (an uncaught error): it takes no more messages, so it is dropped and the
   * jobs it held fail. Left in place it looked idle, took the next jobs, and they never ended.
   * Once no worker is left, waiting jobs are hashed on this thread.
   */
  #crashed(w: Worker, message: string): void {
    const held = this.#held.get(w);
    if (!held) return;
    w.terminate();
    this.#held.delete(w);
    this.#workers = this.#workers.filter((other) => other !== w);
    for (const job of held.jobs.values()) {
      job.reject(new HashFileError("unreadable", `hash worker failed: ${message}`));
    }
    if (this.#held.size > 0) {
      this.#pump();
      return;
    }
    for (const job of this.#queue.splice(0)) {
      hashFile(job.absPath, this.options, job.onChunks, job.previous).then(job.resolve, job.reject);
    }
  }

  /** Stop every worker; jobs not finished are rejected. */
  close(): void {
    this.#closed = true;
    for (const w of this.#workers) w.terminate();
    for (const held of this.#held.values()) {
      for (const job of held.jobs.values()) job.reject(new Error("hash pool closed"));
    }
    this.#workers = [];
    this.#held.clear();
    for (const job of this.#queue) job.reject(new Error("hash pool closed"));
    this.#queue = [];
  }
}
