/**
 * writeBatches: small files are written by one pool that goes straight on to the next batch;
 * each batch is fetched ahead and finished (recorded) in order once its items are written.
 */
import assert from "node:assert/strict";
import { writeBatches } from "../../src/sync/mod.ts";

/** A promise with its resolve, to hold a step until the test lets it go. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => open = resolve);
  return { promise, open };
}

/** Let pending promise callbacks run. */
const settle = () => new Promise((r) => setTimeout(r, 0));

Deno.test("writeBatches: a slow item does not hold the next batch's items", async () => {
  const slow = gate();
  const events: string[] = [];
  const done = writeBatches([["a1", "a2"], ["b1", "b2", "b3"]], 2, {
    fetch: (i) => {
      events.push(`fetch ${i}`);
      return Promise.resolve(i);
    },
    write: async (item) => {
      events.push(`start ${item}`);
      if (item === "a1") await slow.promise;
      events.push(`end ${item}`);
    },
    finish: (i) => {
      events.push(`finish ${i}`);
      return Promise.resolve();
    },
  });
  await settle();
  // a1 is still being written: the second writer went on to batch 1 and wrote all of it,
  // but batch 1 is finished only after batch 0.
  assert.ok(!events.includes("end a1"));
  for (const item of ["b1", "b2", "b3"]) assert.ok(events.includes(`end ${item}`), item);
  assert.ok(!events.some((e) => e.startsWith("finish")), events.join(", "));
  slow.open();
  await done;
  assert.deepEqual(events.filter((e) => e.startsWith("finish")), ["finish 0", "finish 1"]);
  assert.ok(events.indexOf("finish 0") > events.indexOf("end a1"));
  assert.deepEqual(events.filter((e) => e.startsWith("fetch")), ["fetch 0", "fetch 1"]);
});

Deno.test("writeBatches: a batch is fetched once the one before starts, not earlier", async () => {
  const fetched: number[] = [];
  const holds = [gate(), gate(), gate()];
  const done = writeBatches([["x"], ["y"], ["z"], ["w"]], 1, {
    fetch: (i) => {
      fetched.push(i);
      return Promise.resolve(i);
    },
    write: (_, i) => i < 3 ? holds[i].promise : Promise.resolve(),
    finish: () => Promise.resolve(),
  });
  await settle();
  assert.deepEqual(fetched, [0, 1]); // batch 0 being written, batch 1 ahead
  holds[0].open();
  await settle();
  assert.deepEqual(fetched, [0, 1, 2]);
  holds[1].open();
  holds[2].open();
  await done;
  assert.deepEqual(fetched, [0, 1, 2, 3]);
});

Deno.test("writeBatches: after a failed write, started batches are still finished", async () => {
  const finished: number[] = [];
  const written: string[] = [];
  await assert.rejects(
    writeBatches([["a", "bad"], ["c"], ["d"]], 1, {
      fetch: (i) => Promise.resolve(i),
      write: (item) => {
        if (item === "bad") return Promise.reject(new Error("disk on fire"));
        written.push(item);
        return Promise.resolve();
      },
      finish: (i) => {
        finished.push(i);
        return Promise.resolve();
      },
    }),
    /disk on fire/,
  );
  assert.deepEqual(written, ["a"]); // nothing starts after the failure
  // Batch 0 holds a written file that must be recorded; batch 1 was fetched ahead (its
  // finish releases what it holds); batch 2 was never reached.
  assert.deepEqual(finished, [0, 1]);
});

Deno.test("writeBatches: a failed finish is reported, later batches still finish", async () => {
  const finished: number[] = [];
  await assert.rejects(
    writeBatches([["a"], ["b"]], 2, {
      fetch: (i) => Promise.resolve(i),
      write: () => Promise.resolve(),
      finish: (i) => {
        finished.push(i);
        return i === 0 ? Promise.reject(new Error("commit failed")) : Promise.resolve();
      },
    }),
    /commit failed/,
  );
  assert.deepEqual(finished, [0, 1]);
});

Deno.test("writeBatches: no batches, nothing fetched", async () => {
  let calls = 0;
  await writeBatches<string, number>([], 8, {
    fetch: () => Promise.resolve(calls++),
    write: () => Promise.resolve(),
    finish: () => Promise.resolve(),
  });
  assert.equal(calls, 0);
});
