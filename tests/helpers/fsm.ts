/** Shared pieces of the file index's unit tests (tests/unit/fsm_*_test.ts). */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/mod.ts";
import {
  type ApplyResult,
  type Command,
  encodeCommand,
  type IndexState,
} from "../../src/fsm/mod.ts";

/** A distinct file root per number. */
export const root = (n: number) => sha256(new Uint8Array([n, n >> 8, n >> 16]));

/** Run `fn` with a fresh in-memory Deno KV, closed afterwards. */
export async function withKv<T>(fn: (kv: Deno.Kv) => Promise<T>): Promise<T> {
  const kv = await Deno.openKv(":memory:");
  try {
    return await fn(kv);
  } finally {
    kv.close();
  }
}

/** Every item of an async iterable, in order. */
export async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Every key and value under the index prefix: two states are equal iff these are. */
export async function dump(kv: Deno.Kv): Promise<[string, unknown][]> {
  const out: [string, unknown][] = [];
  for await (const e of kv.list({ prefix: ["fsm"] })) out.push([JSON.stringify(e.key), e.value]);
  return out;
}

/** Assert that a command applied, showing why if it did not. */
export function ok(r: ApplyResult): void {
  assert.ok(r.ok, r.ok ? "" : `${r.code}: ${r.message}`);
}

/** Seeded PRNG (mulberry32): a failing run replays from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `good` with 1 to 4 random bytes changed and, three times in ten, cut short. */
export function mutate(good: Uint8Array, rand: () => number): Uint8Array {
  let bytes = good.slice();
  const flips = 1 + Math.floor(rand() * 4);
  for (let f = 0; f < flips; f++) {
    bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
  }
  if (rand() < 0.3) bytes = bytes.subarray(0, Math.floor(rand() * bytes.length));
  return bytes;
}

/**
 * Commands applied to one index in order, one at a time, as Raft's apply loop does. The sync
 * engine proposes several commands at once; applied concurrently, one apply would take the
 * other's half-written entry for the leftovers of a crash and undo it (IndexState.apply is
 * not reentrant, and needs not be: Raft never calls it so).
 */
export class SerialLog {
  #appended = 0;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly index: IndexState) {}

  /** Append a command and resolve with its result once it is applied. */
  apply(command: Command): Promise<ApplyResult> {
    const at = ++this.#appended;
    const result = this.#tail.then(() => this.index.apply(at, encodeCommand(command)));
    this.#tail = result.catch(() => {});
    return result;
  }
}
