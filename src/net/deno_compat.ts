/**
 * Deno compatibility for libp2p's Node-oriented dependencies.
 *
 * libp2p's peer store takes a per-peer lock from `mortice`, which (in the main thread) opens a
 * `BroadcastChannel("mortice")` to serve lock requests from worker threads and then calls
 * `channel.unref()`. Deno's BroadcastChannel has no `unref`, so that channel keeps the event
 * loop alive forever and a process that has stopped its libp2p node never exits. We never run
 * libp2p in workers or a cluster (mortice is used with `singleProcess: true`), so nobody can
 * ever post to that channel: an inert stand-in for that one channel name is exact, and every
 * other BroadcastChannel is left untouched.
 */

const MORTICE_CHANNEL = "mortice";

/** A BroadcastChannel look-alike that never receives anything and holds no resource. */
class InertBroadcastChannel extends EventTarget {
  readonly name: string;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onmessageerror: ((ev: MessageEvent) => void) | null = null;
  constructor(name: string) {
    super();
    this.name = name;
  }
  postMessage(_message: unknown): void {}
  close(): void {}
  unref(): void {}
  ref(): void {}
}

let installed = false;

/** Install the shim once per process; idempotent. */
export function installDenoCompat(): void {
  if (installed || typeof globalThis.BroadcastChannel !== "function") return;
  installed = true;
  const Native = globalThis.BroadcastChannel;
  globalThis.BroadcastChannel = new Proxy(Native, {
    construct(target, args, newTarget) {
      if (args[0] === MORTICE_CHANNEL) {
        return new InertBroadcastChannel(MORTICE_CHANNEL) as unknown as BroadcastChannel;
      }
      return Reflect.construct(target, args, newTarget);
    },
  });
}
