/**
 * Writes items (small files) batch after batch with one pool of writers that never waits at a
 * batch boundary.
 *
 * Small files are fetched a batch at a time and recorded a batch at a time (one directory
 * fsync and one KV commit per batch, see WriteGroup). Writing batch after batch with a barrier
 * in between left the writers idle twice per batch: while the slowest file of a batch ended,
 * and while the batch was recorded. Measured on 1,000 small files, that was four pauses of
 * 100-150 ms in a 1.2 s write. Here the writers go straight on to the next batch; a batch is
 * finished (recorded) in the background once its last item is written, batches in order.
 */
import { mapLimit } from "../util/mod.ts";

/** The steps of writeBatches, for batches numbered from 0. */
export interface BatchSteps<T, F> {
  /**
   * Fetch what the items of batch `index` need. Batch i+1 is fetched once batch i starts, so
   * the items of at most three batches are held: the tail of one, the one being written, and
   * the next.
   */
  fetch(index: number): Promise<F>;
  /** Write one item with what its batch fetched. */
  write(item: T, fetched: F, index: number): Promise<void>;
  /**
   * Called once every item of batch `index` was written (or failed): in batch order, one at a
   * time, and also after a failure for every batch that had started.
   */
  finish(index: number, fetched: F): Promise<void>;
}

/**
 * Write every item of `batches`, `concurrency` at once, in order; resolves once every started
 * batch is finished. The first error (of a fetch, write or finish) is thrown at the end; after
 * a failed write no new item starts, but every batch that started is still finished.
 */
export async function writeBatches<T, F>(
  batches: readonly (readonly T[])[],
  concurrency: number,
  steps: BatchSteps<T, F>,
): Promise<void> {
  const fetched: Promise<F>[] = [];
  const fetchBatch = (index: number): Promise<F> => {
    if (fetched[index] === undefined) {
      fetched[index] = steps.fetch(index);
      // Observed when its batch is written; a batch never reached must not warn.
      fetched[index].catch(() => {});
    }
    return fetched[index];
  };
  const left = batches.map((b) => b.length);
  let failure: { error: unknown } | null = null;
  let finishing: Promise<void> = Promise.resolve();
  let finishedUpTo = 0; // batches [0, finishedUpTo) are queued for finishing
  /** Queue, in order, the finish of every batch up to `index` whose items all ended. */
  const finishReady = () => {
    while (finishedUpTo < batches.length && left[finishedUpTo] === 0) {
      const index = finishedUpTo++;
      if (fetched[index] === undefined) continue; // an empty batch: nothing was fetched
      finishing = finishing.then(async () => {
        try {
          await steps.finish(index, await fetched[index]);
        } catch (e) {
          failure ??= { error: e };
        }
      });
    }
  };
  const items = batches.flatMap((batch, index) => batch.map((item) => ({ item, index })));
  try {
    await mapLimit(items, concurrency, async ({ item, index }) => {
      try {
        const objects = await fetchBatch(index);
        if (index + 1 < batches.length) fetchBatch(index + 1);
        await steps.write(item, objects, index);
      } finally {
        left[index]--;
        finishReady();
      }
    });
  } catch (e) {
    failure ??= { error: e };
    // Items that never started: their batches are finished with what was written.
    for (let i = 0; i < batches.length; i++) if (fetched[i] !== undefined) left[i] = 0;
    finishReady();
  }
  await finishing;
  if (failure !== null) throw (failure as { error: unknown }).error;
}
