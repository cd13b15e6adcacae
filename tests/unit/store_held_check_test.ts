/** The extra garbage collections that follow pushes (src/store/held_check.ts). */
import assert from "node:assert/strict";
import { HeldCheck } from "../../src/store/mod.ts";

const idleAfter = (writes: number) => ({ busy: false, pendingDown: 0, writes });

Deno.test("held check: a collection between a push and its file's write is followed by another", () => {
  const check = new HeldCheck(60_000);
  assert.equal(check.due(0, idleAfter(5)), false, "nothing was pushed yet");
  // Pushed objects arrived; the collection ran before their commit was applied.
  check.ran(1_000, 5, true);
  assert.equal(check.due(2_000, idleAfter(5)), false, "nothing written since");
  // The commit applied, its file is being written.
  assert.equal(check.due(3_000, { busy: true, pendingDown: 0, writes: 6 }), false);
  assert.equal(check.due(3_000, { busy: false, pendingDown: 1, writes: 6 }), false);
  // Written: one more collection takes the pushed copies out of the packs.
  assert.equal(check.due(4_000, idleAfter(6)), true);
  check.ran(4_000, 6, false);
  assert.equal(check.due(5_000, idleAfter(6)), false, "once per batch of writes");
  assert.equal(check.due(6_000, idleAfter(7)), true, "later writes call for one again");
});

Deno.test("held check: the window closes, and a run without pushes does not open it", () => {
  const check = new HeldCheck(60_000);
  check.ran(1_000, 5, false);
  assert.equal(check.due(2_000, idleAfter(9)), false, "a run no push called for");
  check.ran(10_000, 9, true);
  assert.equal(check.due(69_999, idleAfter(10)), true);
  assert.equal(check.due(70_000, idleAfter(10)), false, "the window is over");
  assert.equal(check.due(20_000, undefined), false, "no engine");
});
