/**
 * A linearizability checker for a history of register operations, in the style of Wing & Gong
 * with Lowe's just-in-time linearization and memoisation, as in Porcupine: depth-first search
 * over which pending operation takes effect next, caching (set of linearized ops, state) pairs
 * already explored.
 *
 * P-compositionality: registers are independent objects, so the history is split by key and
 * each key checked alone, which keeps the search small.
 *
 * Operations whose outcome is unknown (the client timed out or its node crashed) get a return
 * time of +Infinity: they may take effect at any point after their invocation, or never (being
 * linearized after everything else is the same as never). Reads with unknown outcome carry no
 * information and should be left out of the history by the caller.
 */

export type RegisterOp =
  | { readonly kind: "write"; readonly value: string }
  | { readonly kind: "cas"; readonly expected: string | null; readonly value: string }
  | { readonly kind: "read" };

export interface HistoryOp {
  readonly id: number;
  readonly key: string;
  readonly op: RegisterOp;
  readonly call: number;
  /** Completion time, or Infinity when the outcome is unknown. */
  readonly ret: number;
  /** Read: the value seen. CAS: whether it swapped. Write: "ok". Undefined if unknown. */
  readonly output?: string | null | boolean;
}

export type CheckResult =
  | { readonly result: "ok" }
  | { readonly result: "violation"; readonly key: string; readonly ops: readonly HistoryOp[] }
  | { readonly result: "unknown"; readonly key: string; readonly steps: number };

type State = string | null;

function step(state: State, h: HistoryOp): [boolean, State] {
  const known = h.ret !== Infinity;
  switch (h.op.kind) {
    case "write":
      return [true, h.op.value];
    case "cas": {
      const match = state === h.op.expected;
      if (!known) return [true, match ? h.op.value : state];
      if (h.output === true) return [match, match ? h.op.value : state];
      return [!match, state];
    }
    case "read":
      return [h.output === state, state];
  }
}

interface Node {
  readonly op: number;
  readonly isCall: boolean;
  match: Node | null;
  prev: Node | null;
  next: Node | null;
}

/** Check one key's history. `maxSteps` bounds the search. */
export function checkKey(ops: readonly HistoryOp[], maxSteps: number): "ok" | "violation" | number {
  const n = ops.length;
  if (n === 0) return "ok";
  const events: { t: number; call: boolean; i: number }[] = [];
  ops.forEach((o, i) => {
    events.push({ t: o.call, call: true, i });
    events.push({ t: o.ret, call: false, i });
  });
  // At equal times calls sort first: treating touching operations as concurrent can only
  // accept more histories, never report a false violation.
  events.sort((a, b) => a.t - b.t || (a.call === b.call ? a.i - b.i : a.call ? -1 : 1));
  const head: Node = { op: -1, isCall: false, match: null, prev: null, next: null };
  const calls = new Map<number, Node>();
  let tail = head;
  for (const ev of events) {
    const node: Node = { op: ev.i, isCall: ev.call, match: null, prev: tail, next: null };
    tail.next = node;
    tail = node;
    if (ev.call) calls.set(ev.i, node);
    else calls.get(ev.i)!.match = node;
  }

  const lift = (c: Node) => {
    c.prev!.next = c.next;
    if (c.next) c.next.prev = c.prev;
    const r = c.match!;
    r.prev!.next = r.next;
    if (r.next) r.next.prev = r.prev;
  };
  const unlift = (c: Node) => {
    const r = c.match!;
    r.prev!.next = r;
    if (r.next) r.next.prev = r;
    c.prev!.next = c;
    if (c.next) c.next.prev = c;
  };

  const bits = new Uint32Array(Math.ceil(n / 32));
  const cache = new Set<string>();
  const stack: { node: Node; state: State }[] = [];
  let state: State = null;
  let entry = head.next;
  let steps = 0;
  while (head.next !== null) {
    if (++steps > maxSteps) return steps;
    const e = entry!;
    if (e.isCall) {
      const [ok, next] = step(state, ops[e.op]);
      if (ok) {
        bits[e.op >> 5] |= 1 << (e.op & 31);
        const key = `${bits.join(",")}|${next === null ? "\u0000" : next}`;
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ node: e, state });
          state = next;
          lift(e);
          entry = head.next;
          continue;
        }
        bits[e.op >> 5] &= ~(1 << (e.op & 31));
      }
      entry = e.next;
    } else {
      // A return event reached with its call still pending: backtrack.
      const top = stack.pop();
      if (!top) return "violation";
      state = top.state;
      bits[top.node.op >> 5] &= ~(1 << (top.node.op & 31));
      unlift(top.node);
      entry = top.node.next;
    }
  }
  return "ok";
}

/** Check a whole history, key by key. */
export function checkHistory(ops: readonly HistoryOp[], maxStepsPerKey = 2_000_000): CheckResult {
  const byKey = new Map<string, HistoryOp[]>();
  for (const o of ops) {
    if (o.op.kind === "read" && o.ret === Infinity) continue;
    let l = byKey.get(o.key);
    if (!l) byKey.set(o.key, l = []);
    l.push(o);
  }
  let unknown: CheckResult | null = null;
  for (const [key, list] of [...byKey].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const r = checkKey(list, maxStepsPerKey);
    if (r === "violation") return { result: "violation", key, ops: list };
    if (typeof r === "number") unknown ??= { result: "unknown", key, steps: r };
  }
  return unknown ?? { result: "ok" };
}
