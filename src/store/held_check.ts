/**
 * When garbage collection should look again for pushed objects that files now hold.
 *
 * Chunks pushed to a node before a commit become redundant in its packs once the change is
 * written into its file (gc.ts, "held by the tree"). A collection that runs after the push but
 * before that write keeps them, rightly; but pushes were the only thing that made the held rule
 * run, so without another push the copies stayed in the packs until the next unrelated one.
 * HeldCheck closes that gap: for a while after a collection that pushes called for, it asks
 * for one more each time the engine has applied newer commits and written all of them.
 */

/** How long after a push-triggered collection later writes still call for one, ms. */
export const HELD_CHECK_WINDOW_MS = 120_000;

/** What HeldCheck needs to know of the sync engine's last pass. */
export interface PassState {
  /** A pass runs, or files are still written or hashed in the background. */
  busy: boolean;
  /** Committed entries not yet on disk. */
  pendingDown: number;
  /** The applied index the last pass planned from (absent before the first pass). */
  plannedAt?: number;
}

/** Decides the extra collections that follow pushes (one object per node). */
export class HeldCheck {
  #until = 0;
  #plannedAtRun = -1;

  constructor(private readonly windowMs = HELD_CHECK_WINDOW_MS) {}

  /**
   * A collection ran at `now`, after the engine had planned from `plannedAt`. `pushed`: objects
   * had been pushed here since the run before, so some may be written into files later.
   */
  ran(now: number, plannedAt: number | undefined, pushed: boolean): void {
    if (pushed) this.#until = now + this.windowMs;
    this.#plannedAtRun = plannedAt ?? -1;
  }

  /**
   * Whether a collection is due for the held rule alone: within the window after a pushed one,
   * the engine is idle with every commit it planned from on disk, and it planned from a newer
   * index than the last collection saw (the pushed objects' commit may be among those).
   */
  due(now: number, pass: PassState | undefined): boolean {
    if (now >= this.#until || pass === undefined) return false;
    if (pass.busy || pass.pendingDown > 0 || pass.plannedAt === undefined) return false;
    return pass.plannedAt > this.#plannedAtRun;
  }
}
