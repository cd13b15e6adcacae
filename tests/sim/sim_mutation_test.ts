/**
 * The checkers can fail: with a deliberately wrong rule switched on, the simulation must report
 * a violation within 1,000 seeds.
 */
import assert from "node:assert/strict";
import type { UnsafeOptions } from "../../src/raft/mod.ts";
import { simulate } from "./cluster.ts";

function firstFailure(unsafe: UnsafeOptions, sizes: number[]): string | null {
  for (const nodes of sizes) {
    for (let seed = 1; seed <= 1000; seed++) {
      const r = simulate({ seed, nodes, unsafe });
      if (!r.ok) return `seed ${seed}, ${nodes} nodes: ${r.violations[0]}`;
    }
  }
  return null;
}

Deno.test("raft sim: granting votes without the log check is caught", () => {
  const found = firstFailure({ voteWithoutLogCheck: true }, [3]);
  assert.ok(found, "no violation in 1,000 seeds");
  assert.match(found, /leader completeness|state machine safety|log matching|linearizab/);
});

Deno.test("raft sim: committing previous-term entries by counting replicas is caught", () => {
  const found = firstFailure({ commitPreviousTerm: true }, [3, 5]);
  assert.ok(found, "no violation in 1,000 seeds");
  assert.match(found, /leader completeness|state machine safety|log matching|linearizab/);
});
