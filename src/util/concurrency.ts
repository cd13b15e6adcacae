/** At most `limit` tasks run at once; the others start in the order they were given. */
export class Limiter {
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  /** Run `task` once a place is free; resolves or rejects as it does. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= Math.max(1, this.limit)) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else this.#running++;
    try {
      return await task();
    } finally {
      // The place goes straight to the next task waiting, if any.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}

/**
 * Run `fn` over `items` with at most `limit` calls in flight, started in the items' order, and
 * return the results in that order. The first failure stops new calls from starting and is
 * thrown once the running ones end.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async () => {
    while (failure === null && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  const n = Math.min(Math.max(1, limit), items.length);
  // Every worker finishes its current item before the first error is reported, so a caller
  // that cleans up after a failure never races work still in flight.
  await Promise.all(Array.from({ length: n }, worker));
  if (failure !== null) throw (failure as { error: unknown }).error;
  return out;
}
