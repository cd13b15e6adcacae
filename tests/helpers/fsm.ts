/** Shared pieces of the file index's unit tests (tests/unit/fsm_*_test.ts). */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/mod.ts";
import type { ApplyResult } from "../../src/fsm/mod.ts";

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
