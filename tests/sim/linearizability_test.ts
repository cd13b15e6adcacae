/** The register linearizability checker accepts linearizable histories and rejects others. */
import assert from "node:assert/strict";
import { checkHistory, type HistoryOp } from "./linearizability.ts";

let id = 0;
const w = (key: string, value: string, call: number, ret: number): HistoryOp => ({
  id: ++id,
  key,
  op: { kind: "write", value },
  call,
  ret,
  output: "ok",
});
const r = (key: string, output: string | null, call: number, ret: number): HistoryOp => ({
  id: ++id,
  key,
  op: { kind: "read" },
  call,
  ret,
  output,
});
const cas = (
  key: string,
  expected: string | null,
  value: string,
  ok: boolean | undefined,
  call: number,
  ret: number,
): HistoryOp => ({
  id: ++id,
  key,
  op: { kind: "cas", expected, value },
  call,
  ret,
  output: ok,
});

Deno.test("linearizability: sequential and overlapping histories that are linearizable pass", () => {
  assert.equal(checkHistory([w("x", "1", 0, 1), r("x", "1", 2, 3)]).result, "ok");
  // A read overlapping a write may see either value.
  assert.equal(
    checkHistory([w("x", "1", 0, 10), r("x", null, 1, 2), r("x", "1", 3, 4)]).result,
    "ok",
  );
  assert.equal(
    checkHistory([
      cas("x", null, "a", true, 0, 1),
      cas("x", null, "b", false, 2, 3),
      r("x", "a", 4, 5),
    ]).result,
    "ok",
  );
  // An operation with unknown outcome may have happened late, or never.
  assert.equal(
    checkHistory([
      w("x", "1", 0, 1),
      w("x", "2", 2, Infinity),
      r("x", "1", 5, 6),
      r("x", "2", 7, 8),
    ]).result,
    "ok",
  );
  assert.equal(
    checkHistory([w("x", "1", 0, 1), cas("x", "1", "9", undefined, 2, Infinity), r("x", "1", 5, 6)])
      .result,
    "ok",
  );
});

Deno.test("linearizability: stale reads, lost writes and impossible CAS results are caught", () => {
  // Stale read: the write completed before the read began.
  const a = checkHistory([w("x", "1", 0, 1), w("x", "2", 2, 3), r("x", "1", 4, 5)]);
  assert.equal(a.result, "violation");
  // Reading a value back after reading its successor.
  const b = checkHistory([
    w("x", "1", 0, 10),
    w("x", "2", 0, 10),
    r("x", "2", 11, 12),
    r("x", "1", 13, 14),
  ]);
  assert.equal(b.result, "violation");
  // A CAS that claims success against a value that was never there.
  const c = checkHistory([w("x", "1", 0, 1), cas("x", "7", "8", true, 2, 3)]);
  assert.equal(c.result, "violation");
  // Keys are independent objects: a violation on y is reported as y.
  const d = checkHistory([
    w("x", "1", 0, 1),
    r("x", "1", 2, 3),
    w("y", "1", 0, 1),
    r("y", null, 2, 3),
  ]);
  assert.equal(d.result, "violation");
  if (d.result === "violation") assert.equal(d.key, "y");
});

Deno.test("linearizability: the search bound yields 'unknown', not a verdict", () => {
  const ops: HistoryOp[] = [];
  for (let i = 0; i < 30; i++) ops.push(w("x", String(i), 0, Infinity));
  ops.push(r("x", "nope", 1, 2));
  const res = checkHistory(ops, 1000);
  assert.equal(res.result, "unknown");
});
