/**
 * A timeout AbortSignal that never keeps the process alive and can be cancelled.
 *
 * `AbortSignal.timeout()` cannot be cancelled, and in Deno a timeout signal with an 'abort'
 * listener keeps the event loop alive until it fires (in Node its timer is unref'd). libp2p
 * attaches listeners to the signals it is given, so a 10 s dial or handshake timeout would
 * hold a finished process open for 10 s. This one clears its timer when the operation ends
 * and never holds the process open on its own.
 */
export interface Deadline {
  readonly signal: AbortSignal;
  /** Cancel the timer (the operation finished). */
  clear(): void;
}

/** A signal that aborts with a TimeoutError after `ms`, unless cleared first. */
export function deadline(ms: number): Deadline {
  const controller = new AbortController();
  const id = setTimeout(() => {
    controller.abort(new DOMException(`timed out after ${ms} ms`, "TimeoutError"));
  }, ms);
  Deno.unrefTimer(id);
  return { signal: controller.signal, clear: () => clearTimeout(id) };
}
