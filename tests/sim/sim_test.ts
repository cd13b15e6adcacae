/**
 * CI slice of the deterministic simulation: 500 seeds for each cluster size. A failure prints
 * the seed; replay it with `deno task sim --seed N --nodes M`.
 */
import assert from "node:assert/strict";
import { simulate } from "./cluster.ts";

const SEEDS = 500;

for (const nodes of [3, 5, 7]) {
  Deno.test(`raft sim: ${SEEDS} seeds of a ${nodes}-node cluster under faults stay safe and live`, () => {
    const failures: string[] = [];
    let ops = 0;
    for (let seed = 1; seed <= SEEDS; seed++) {
      const r = simulate({ seed, nodes });
      ops += r.stats.ops;
      if (!r.ok) {
        failures.push(
          `seed ${seed} (deno task sim --seed ${seed} --nodes ${nodes}):\n  ${
            r.violations.join("\n  ")
          }`,
        );
      }
    }
    assert.ok(ops > SEEDS * 10, "the workload actually ran");
    assert.deepEqual(failures, []);
  });
}

Deno.test("raft sim: one seed replays identically", () => {
  const a = simulate({ seed: 1234, nodes: 5 });
  const b = simulate({ seed: 1234, nodes: 5 });
  assert.deepEqual(a, b);
});
