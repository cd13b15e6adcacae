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
  resolve: (r: HashedFile) => void;
  reject: (e: Error) => void;
}

/** Hashes files on worker threads, or inline on the calling thread when `size` is 0. */
export class HashPool {
  #workers: Worker[] = [];
  #idle: Worker[] = [];
  #queue: Job[] = [];
  /** The job each busy worker is on. */
  #busy = new Map<Worker, Job>();
  #nextId = 1;

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
      this.#idle.push(w);
    }
  }

  /**
   * Hash one file, streaming its chunks to `onChunks`; rejects with HashFileError. `previous`:
   * the chunks of the version it replaces, as hashFile takes them.
   */
  hash(absPath: string, onChunks: ChunkSink, previous?: readonly Chunk[]): Promise<HashedFile> {
    if (this.size === 0) return hashFile(absPath, this.options, onChunks, previous);
    return new Promise((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, absPath, onChunks, previous, resolve, reject });
      this.#pump();
    });
  }

  /** Jobs waiting or running. */
  get backlog(): number {
    return this.#queue.length + this.#busy.size;
  }

  #pump(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const w = this.#idle.pop()!;
      const job = this.#queue.shift()!;
      this.#busy.set(w, job);
      w.postMessage({
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
    if (msg.chunks) {
      const running = this.#busy.get(w);
      if (running && running.id === msg.id) running.onChunks(msg.chunks);
      return;
    }
    const job = this.#busy.get(w);
    this.#busy.delete(w);
    this.#idle.push(w);
    if (job && job.id === msg.id) {
      if (msg.ok) job.resolve(msg.result!);
      else job.reject(new HashFileError(msg.code as HashFileError["code"], msg.message!));
    }
    this.#pump();
  }

  #crashed(w: Worker, message: string): void {
    const job = this.#busy.get(w);
    this.#busy.delete(w);
    if (job) {
      job.reject(new HashFileError("unreadable", `hash worker failed: ${message}`));
    }
    this.#idle.push(w);
    this.#pump();
  }

  /** Stop every worker. */
  close(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
    this.#idle = [];
    for (const job of this.#queue) job.reject(new Error("hash pool closed"));
    this.#queue = [];
  }
}
