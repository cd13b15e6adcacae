/**
 * When garbage collection should look again for pushed objects that files now hold.
 *
 * Chunks pushed to a node before a commit become redundant in its packs once the change is
 * written into its file (gc.ts, "held by the tree"). A collection that runs after the push but
 * before that write keeps them, rightly; but pushes were the only thing that made the held rule
 * run, so without another push the copies stayed in the packs until the next unrelated one.
 * HeldCheck closes that gap: for a while after a collection that pushes called for, it asks
 * for one more each time the engine has written files since and has nothing left to write.
 */

/** How long after a push-triggered collection later writes still call for one, ms. */
export const HELD_CHECK_WINDOW_MS = 120_000;

/** What HeldCheck needs to know of the sync engine's last pass. */
export interface PassState {
  /** A pass runs, or files are still written or hashed in the background. */
  busy: boolean;
  /** Committed entries not yet on disk. */
  pendingDown: number;
  /** Entries the engine has written to disk so far. */
  writes: number;
}

/** Decides the extra collections that follow pushes (one object per node). */
export class HeldCheck {
  #until = 0;
  #writesAtRun = 0;

  constructor(private readonly windowMs = HELD_CHECK_WINDOW_MS) {}

  /**
   * A collection ran at `now`, after the engine had written `writes` entries. `pushed`: objects
   * had been pushed here since the run before, so some may be written into files later.
   */
  ran(now: number, writes: number, pushed: boolean): void {
    if (pushed) this.#until = now + this.windowMs;
    this.#writesAtRun = writes;
  }

  /**
   * Whether a collection is due for the held rule alone: within the window after a pushed one,
   * the engine has written entries since the last collection (the pushed objects' file may be
   * among them) and is idle with nothing left to write. Commits that wrote nothing (membership,
   * addresses) call for none: each run surveys the whole pack.
   */
  due(now: number, pass: PassState | undefined): boolean {
    if (now >= this.#until || pass === undefined) return false;
    if (pass.busy || pass.pendingDown > 0) return false;
    return pass.writes > this.#writesAtRun;
  }
}
