/**
 * Deterministic simulation of a Raft cluster in one process: simulated clock and network (loss,
 * delay, duplication, reordering, symmetric and asymmetric partitions), crashes that lose
 * everything not persisted, restarts from storage, membership changes, and a client workload of
 * register operations. One seed decides everything, so a failing seed replays exactly.
 *
 * Checkers (each violation is reported with the seed):
 * - election safety: at most one leader per term;
 * - log matching: two logs agreeing on an (index, term) agree on everything up to it;
 * - leader completeness: a new leader holds every entry any node has seen committed;
 * - state machine safety: every node commits and applies the same entry at each index, in
 *   order, and reaches the same register state after it (snapshots included);
 * - linearizability of the client history (see linearizability.ts);
 * - liveness: once faults heal, a leader commits a fresh entry and every member applies it
 *   within a bounded number of ticks.
 */
import {
  bootstrapState,
  type ConfChange,
  decodeConfChange,
  decodeMessage,
  emptyState,
  encodeMessage,
  type Entry,
  EntryType,
  type MembershipConfig,
  MemoryStorage,
  type Message,
  RaftCore,
  RaftError,
  RaftRole,
  type UnsafeOptions,
} from "../../src/raft/mod.ts";
import { checkHistory, type HistoryOp, type RegisterOp } from "./linearizability.ts";
import { type Command, encodeCommand, RegisterMachine } from "./register.ts";
import { Rng } from "./rng.ts";

export interface SimConfig {
  readonly seed: number;
  readonly nodes: number;
  /** Simulated time units of faults before healing (one Raft tick is 10 units). */
  readonly faultTime?: number;
  /** Ticks allowed after healing for a leader to commit and every member to apply. */
  readonly livenessTicks?: number;
  readonly unsafe?: UnsafeOptions;
  /** Bound on the linearizability search per key. */
  readonly maxCheckSteps?: number;
  /** Called for every delivered message, for debugging a seed. */
  readonly trace?: (now: number, m: Message) => void;
}

export interface SimStats {
  ops: number;
  opsOk: number;
  opsUnknown: number;
  reads: number;
  messages: number;
  dropped: number;
  crashes: number;
  partitions: number;
  leaders: number;
  maxTerm: number;
  committed: number;
  snapshotsInstalled: number;
  confChanges: number;
  healTicks: number;
  linearizability: "ok" | "unknown" | "violation" | "skipped";
}

export interface SimReport {
  readonly seed: number;
  readonly nodes: number;
  readonly ok: boolean;
  readonly violations: string[];
  readonly stats: SimStats;
  readonly profile: string;
}

const TICK = 10;
const OP_TIMEOUT = 400;

interface ClientOp {
  readonly h: {
    id: number;
    key: string;
    op: RegisterOp;
    call: number;
    ret: number;
    output?: string | null | boolean;
  };
  readonly client: Client;
  readonly node: SimNode;
  done: boolean;
  readIndex: number;
}

interface Client {
  readonly id: number;
  session: string;
  seq: number;
  sessions: number;
}

class SimNode {
  core: RaftCore | null = null;
  fsm = new RegisterMachine();
  epoch = 0;
  retired = false;
  applied = 0;
  checkedCommit = 0;
  ledTerm = 0;
  waiters = new Map<string, ClientOp>();
  readWaits = new Map<string, ClientOp>();
  readQueue: ClientOp[] = [];
  constructor(
    readonly id: string,
    readonly storage: MemoryStorage,
    readonly rng: Rng,
    readonly tickPeriod: number,
  ) {}
}

interface Event {
  readonly t: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** A binary min-heap of events ordered by (time, insertion order). */
class EventQueue {
  #h: Event[] = [];
  #seq = 0;
  push(t: number, fn: () => void): void {
    const h = this.#h;
    h.push({ t, seq: this.#seq++, fn });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p], h[i])) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }
  pop(): Event | undefined {
    const h = this.#h;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && less(h[l], h[m])) m = l;
        if (r < h.length && less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
  peekTime(): number {
    return this.#h.length ? this.#h[0].t : Infinity;
  }
}

function less(a: Event, b: Event): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

function digest(e: Entry): string {
  let s = `${e.term}:${e.type}:`;
  for (let i = 0; i < e.data.length; i++) s += String.fromCharCode(e.data[i]);
  return s;
}

function sameEntry(a: Entry, b: Entry): boolean {
  if (a === b) return true;
  if (a.term !== b.term || a.type !== b.type || a.data.length !== b.data.length) return false;
  if (a.data === b.data) return true;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i]) return false;
  return true;
}

export class Simulation {
  readonly cfg: SimConfig;
  readonly rng: Rng;
  readonly q = new EventQueue();
  now = 0;
  readonly nodes = new Map<string, SimNode>();
  readonly violations: string[] = [];
  readonly stats: SimStats = {
    ops: 0,
    opsOk: 0,
    opsUnknown: 0,
    reads: 0,
    messages: 0,
    dropped: 0,
    crashes: 0,
    partitions: 0,
    leaders: 0,
    maxTerm: 0,
    committed: 0,
    snapshotsInstalled: 0,
    confChanges: 0,
    healTicks: -1,
    linearizability: "skipped",
  };
  readonly history: ClientOp["h"][] = [];

  // Fault profile, all drawn from the seed.
  loss: number;
  dup: number;
  maxDelay: number;
  crashRate: number;
  partitionRate: number;
  /** Chance that a new leader crashes moments after winning (leaves uncommitted tails). */
  leaderChurn: number;
  membership: boolean;
  codec: boolean;
  compactEvery: number;
  keepEntries: number;
  coreOpts: { maxSizePerMsg: number; maxInflightMsgs: number; maxSnapshotPiece: number };
  readonly keys: string[];
  readonly faultEnd: number;
  healed = false;

  // Checker state.
  readonly leaders = new Map<number, string>();
  readonly committed = new Map<number, string>();
  maxCommitted = 0;
  readonly stateAt = new Map<number, string>();
  committedConfig: { index: number; config: MembershipConfig };
  readonly blocked = new Map<string, number>();
  probe = { sent: false, at: 0, applied: new Set<string>() };
  nextNodeId: number;
  opId = 0;
  readId = 0;

  constructor(cfg: SimConfig) {
    this.cfg = cfg;
    this.rng = new Rng(cfg.seed);
    const r = this.rng;
    this.loss = r.pick([0, 0, 0.01, 0.05, 0.1, 0.2]);
    this.dup = r.pick([0, 0, 0.02, 0.1]);
    this.maxDelay = r.pick([2, 5, 10, 25, 50]);
    this.crashRate = r.pick([0, 0.001, 0.003, 0.01]);
    this.partitionRate = r.pick([0, 0.005, 0.02, 0.05]);
    this.leaderChurn = r.pick([0, 0.1, 0.3, 0.6]);
    this.membership = r.chance(0.5);
    this.codec = r.chance(0.15);
    this.compactEvery = r.pick([8, 20, 60, 1_000_000]);
    this.keepEntries = r.pick([0, 1, 5]);
    this.coreOpts = {
      maxSizePerMsg: r.pick([1, 1, 200, 1000, 1 << 20]),
      maxInflightMsgs: r.pick([1, 2, 8, 256]),
      maxSnapshotPiece: r.pick([300, 2000, 1 << 20]),
    };
    this.keys = ["x", "y", "z"].slice(0, r.int(1, 3));
    this.faultEnd = cfg.faultTime ?? 3000;
    const ids = Array.from({ length: cfg.nodes }, (_, i) => `n${i + 1}`);
    this.nextNodeId = cfg.nodes + 1;
    this.committedConfig = { index: 1, config: { voters: ids, learners: [] } };
    for (const id of ids) this.#addNode(id, new MemoryStorage(bootstrapState(ids)));
  }

  profile(): string {
    return `loss=${this.loss} dup=${this.dup} delay<=${this.maxDelay} crash=${this.crashRate} ` +
      `partition=${this.partitionRate} churn=${this.leaderChurn} membership=${this.membership} codec=${this.codec} ` +
      `compact=${this.compactEvery}/${this.keepEntries} msg=${this.coreOpts.maxSizePerMsg} ` +
      `inflight=${this.coreOpts.maxInflightMsgs} piece=${this.coreOpts.maxSnapshotPiece} ` +
      `keys=${this.keys.length}`;
  }

  violation(msg: string): void {
    if (this.violations.length < 20) this.violations.push(`t=${this.now}: ${msg}`);
  }

  // ---- nodes ------------------------------------------------------------------------------

  #addNode(id: string, storage: MemoryStorage): SimNode {
    const n = new SimNode(id, storage, this.rng.fork(), this.rng.int(9, 11));
    this.nodes.set(id, n);
    this.#start(n);
    return n;
  }

  #start(n: SimNode): void {
    if (n.retired || n.core) return;
    const state = n.storage.loadSync();
    n.epoch++;
    n.fsm = new RegisterMachine();
    n.applied = 0;
    n.checkedCommit = 0;
    n.ledTerm = 0;
    try {
      n.core = new RaftCore({
        id: n.id,
        electionTick: 10,
        heartbeatTick: 1,
        random: () => n.rng.next(),
        unsafe: this.cfg.unsafe,
        ...this.coreOpts,
      }, state);
    } catch (e) {
      this.violation(`${n.id} failed to restart: ${(e as Error).message}`);
      n.retired = true;
      return;
    }
    if (state.snapshot) {
      n.fsm.restore(state.snapshot.data);
      n.applied = state.snapshot.meta.index;
      this.#checkStateAt(n, n.applied);
    }
    const epoch = n.epoch;
    const tick = () => {
      if (n.epoch !== epoch || !n.core) return;
      this.#run(n, (c) => c.tick());
      if (!this.healed && this.crashRate > 0 && n.rng.chance(this.crashRate)) this.#crash(n);
      else this.q.push(this.now + n.tickPeriod, tick);
    };
    this.q.push(this.now + n.rng.int(1, n.tickPeriod), tick);
  }

  #crash(n: SimNode): void {
    if (!n.core) return;
    this.stats.crashes++;
    n.core = null;
    n.epoch++;
    for (const op of n.waiters.values()) this.#finishUnknown(op);
    for (const op of n.readWaits.values()) this.#dropRead(op);
    for (const op of n.readQueue) this.#dropRead(op);
    n.waiters.clear();
    n.readWaits.clear();
    n.readQueue = [];
    if (!n.retired && !this.healed) {
      this.q.push(this.now + this.rng.int(30, 600), () => {
        if (!this.healed) this.#start(n);
      });
    }
  }

  /** Feed one input to a node's core and carry out everything it asks for. */
  #run(n: SimNode, fn: (c: RaftCore) => void): void {
    const core = n.core;
    if (!core) return;
    try {
      fn(core);
      this.#drain(n, core);
    } catch (e) {
      if (e instanceof RaftError && e.code === "ProposalDropped") throw e;
      if (e instanceof RaftError && e.code === "ConfChangeRejected") throw e;
      this.violation(`${n.id} threw: ${(e as Error).stack ?? e}`);
      this.#crash(n);
    }
  }

  #drain(n: SimNode, core: RaftCore): void {
    for (let guard = 0; core.hasReady(); guard++) {
      if (guard > 10_000) {
        this.violation(`${n.id}: ready loop does not settle`);
        return;
      }
      const rd = core.ready();
      n.storage.saveSync(rd);
      // A crash after persisting but before sending: the ready's messages are lost.
      if (!this.healed && this.crashRate > 0 && n.rng.chance(this.crashRate / 4)) {
        this.#crash(n);
        return;
      }
      for (const m of rd.messages) this.#send(m);
      if (rd.snapshot) {
        n.fsm.restore(rd.snapshot.data);
        n.applied = rd.snapshot.meta.index;
        this.stats.snapshotsInstalled++;
        this.#checkStateAt(n, n.applied);
        for (const op of n.waiters.values()) this.#finishUnknown(op);
        n.waiters.clear();
      }
      for (const e of rd.committed) this.#apply(n, e);
      for (const rs of rd.readStates) {
        const key = new TextDecoder().decode(rs.context);
        const op = n.readWaits.get(key);
        if (!op) continue;
        n.readWaits.delete(key);
        op.readIndex = rs.index;
        n.readQueue.push(op);
      }
      core.advance(rd);
      this.#observe(n, core);
      if (!n.core) return;
    }
    this.#observe(n, core);
    this.#serveReads(n);
    if (n.applied - core.log.offset >= this.compactEvery && n.applied > 0) {
      const c = core.compact(n.applied, n.fsm.snapshot(), this.keepEntries);
      n.storage.compactSync(c);
    }
  }

  #apply(n: SimNode, e: Entry): void {
    if (e.index !== n.applied + 1) {
      this.violation(`${n.id} applied ${e.index} after ${n.applied}`);
    }
    n.applied = e.index;
    this.#checkCommitted(n, e);
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      if (e.index > this.committedConfig.index) {
        this.committedConfig = { index: e.index, config: n.core!.log.configAt(e.index) };
        this.stats.confChanges++;
        if (cc.type === "remove") {
          const gone = cc.node;
          this.q.push(this.now, () => this.#retire(gone));
        }
      }
    } else {
      const r = n.fsm.apply(e);
      if (r) {
        if (r.cmd.o === "probe") this.probe.applied.add(n.id);
        const op = n.waiters.get(`${r.cmd.c}:${r.cmd.s}`);
        if (op) {
          n.waiters.delete(`${r.cmd.c}:${r.cmd.s}`);
          this.#finish(op, r.result === "ok" ? "ok" : r.result);
        }
      }
    }
    const s = n.fsm.stateKey();
    const prev = this.stateAt.get(e.index);
    if (prev === undefined) this.stateAt.set(e.index, s);
    else if (prev !== s) {
      this.violation(`state machine safety: ${n.id} state after ${e.index} differs`);
    }
  }

  #checkStateAt(n: SimNode, index: number): void {
    const prev = this.stateAt.get(index);
    const s = n.fsm.stateKey();
    if (prev === undefined) this.stateAt.set(index, s);
    else if (prev !== s) {
      this.violation(`state machine safety: ${n.id} snapshot state at ${index} differs`);
    }
  }

  #checkCommitted(n: SimNode, e: Entry): void {
    const d = digest(e);
    const prev = this.committed.get(e.index);
    if (prev === undefined) {
      this.committed.set(e.index, d);
      if (e.index > this.maxCommitted) this.maxCommitted = e.index;
    } else if (prev !== d) {
      this.violation(`state machine safety: ${n.id} committed a different entry at ${e.index}`);
    }
  }

  #observe(n: SimNode, core: RaftCore): void {
    if (core.term > this.stats.maxTerm) this.stats.maxTerm = core.term;
    // Everything this node considers committed must match what others committed.
    const c = core.log.committed;
    for (let i = Math.max(n.checkedCommit + 1, core.log.firstIndex()); i <= c; i++) {
      this.#checkCommitted(n, core.log.entry(i)!);
    }
    n.checkedCommit = Math.max(n.checkedCommit, c);
    if (c > this.stats.committed) this.stats.committed = c;
    if (core.role !== RaftRole.Leader || n.ledTerm === core.term) return;
    n.ledTerm = core.term;
    const prev = this.leaders.get(core.term);
    if (prev !== undefined && prev !== n.id) {
      this.violation(`election safety: ${prev} and ${n.id} both lead term ${core.term}`);
    }
    this.leaders.set(core.term, n.id);
    this.stats.leaders++;
    if (!this.healed && this.leaderChurn > 0 && this.rng.chance(this.leaderChurn)) {
      if (this.rng.chance(0.5)) {
        const epoch = n.epoch;
        this.q.push(this.now + this.rng.int(1, 40), () => {
          if (n.epoch === epoch && !this.healed) this.#crash(n);
        });
      } else {
        // Cut the new leader off at once: even its first appends are lost in flight.
        const until = this.now + this.rng.int(50, 400);
        for (const other of this.nodes.keys()) {
          if (other === n.id) continue;
          for (const l of [`${n.id}>${other}`, `${other}>${n.id}`]) {
            this.blocked.set(l, Math.max(this.blocked.get(l) ?? 0, until));
          }
        }
        this.stats.partitions++;
      }
    }
    // Leader completeness: every entry committed anywhere is in the new leader's log.
    const log = core.log;
    if (this.maxCommitted > log.lastIndex()) {
      this.violation(
        `leader completeness: ${n.id} leads term ${core.term} with last index ${log.lastIndex()} ` +
          `but ${this.maxCommitted} is committed`,
      );
      return;
    }
    for (let i = log.firstIndex(); i <= this.maxCommitted; i++) {
      const d = this.committed.get(i);
      if (d !== undefined && digest(log.entry(i)!) !== d) {
        this.violation(
          `leader completeness: ${n.id} (term ${core.term}) lacks committed entry ${i}`,
        );
        return;
      }
    }
  }

  #retire(id: string): void {
    const n = this.nodes.get(id);
    if (!n || n.retired) return;
    n.retired = true;
    this.#crash(n);
  }

  // ---- network ----------------------------------------------------------------------------

  #send(m: Message): void {
    this.stats.messages++;
    if (!this.healed && this.rng.chance(this.loss)) {
      this.stats.dropped++;
      return;
    }
    const copies = !this.healed && this.rng.chance(this.dup) ? 2 : 1;
    for (let k = 0; k < copies; k++) {
      const delay = this.rng.int(1, this.healed ? Math.min(this.maxDelay, 5) : this.maxDelay);
      this.q.push(this.now + delay, () => this.#deliver(m));
    }
  }

  #deliver(m: Message): void {
    const n = this.nodes.get(m.to);
    if (!n || !n.core || this.blocked.has(`${m.from}>${m.to}`)) {
      this.stats.dropped++;
      return;
    }
    this.cfg.trace?.(this.now, m);
    let msg = m;
    if (this.codec) msg = decodeMessage(encodeMessage(m));
    this.#run(n, (c) => c.step(msg));
  }

  #partitionTick(): void {
    if (this.healed) return;
    if (this.partitionRate > 0 && this.rng.chance(this.partitionRate)) {
      const ids = [...this.nodes.values()].filter((n) => !n.retired).map((n) => n.id);
      const links: string[] = [];
      const kind = this.rng.int(0, 2);
      if (kind === 0) {
        // Symmetric split into two groups.
        const shuffled = ids.map((x) => [this.rng.next(), x] as const)
          .sort((a, b) => a[0] - b[0]).map((x) => x[1]);
        const cut = this.rng.int(1, Math.max(1, shuffled.length - 1));
        const a = shuffled.slice(0, cut), b = shuffled.slice(cut);
        for (const x of a) for (const y of b) links.push(`${x}>${y}`, `${y}>${x}`);
      } else if (kind === 1) {
        // Isolate the current leader (symmetrically), the most disruptive single cut.
        const lead = [...this.nodes.values()].find((n) => n.core?.role === RaftRole.Leader);
        const x = lead?.id ?? this.rng.pick(ids);
        for (const y of ids) if (y !== x) links.push(`${x}>${y}`, `${y}>${x}`);
      } else {
        // Asymmetric: some directed links fail.
        const count = this.rng.int(1, ids.length);
        for (let i = 0; i < count; i++) {
          const x = this.rng.pick(ids), y = this.rng.pick(ids);
          if (x !== y) links.push(`${x}>${y}`);
        }
      }
      const until = this.now + this.rng.int(50, 800);
      this.stats.partitions++;
      for (const l of links) this.blocked.set(l, Math.max(this.blocked.get(l) ?? 0, until));
    }
    for (const [l, until] of this.blocked) if (until <= this.now) this.blocked.delete(l);
  }

  // ---- clients ----------------------------------------------------------------------------

  #startClient(id: number): void {
    const c: Client = { id, session: `c${id}.0`, seq: 0, sessions: 0 };
    this.q.push(this.rng.int(0, 50), () => this.#issue(c));
  }

  #next(c: Client): void {
    this.q.push(this.now + this.rng.int(0, 30), () => this.#issue(c));
  }

  #issue(c: Client): void {
    if (this.healed) return;
    const candidates = [...this.nodes.values()].filter((n) => !n.retired);
    const n = this.rng.pick(candidates);
    const key = this.rng.pick(this.keys);
    const kind = this.rng.next();
    if (!n.core) {
      this.#next(c);
      return;
    }
    if (kind < 0.3) {
      this.#issueRead(c, n, key);
      return;
    }
    const value = `${c.id}.${++this.opId}`;
    const seq = ++c.seq;
    let op: RegisterOp;
    let cmd: Command;
    if (kind < 0.65) {
      op = { kind: "write", value };
      cmd = { c: c.session, s: seq, k: key, o: "w", v: value };
    } else {
      // Expect the latest value some client saw or wrote, or an old/absent one.
      const recent: (string | null)[] = [];
      for (let i = this.history.length - 1; i >= 0 && i >= this.history.length - 40; i--) {
        const h = this.history[i];
        if (h.key !== key || h.ret === Infinity) continue;
        if (h.op.kind === "read") recent.push(h.output as string | null);
        else if (h.op.kind === "write" || h.output === true) recent.push(h.op.value);
        if (recent.length >= 3) break;
      }
      const expected = recent.length && this.rng.chance(0.8) ? this.rng.pick(recent) : null;
      op = { kind: "cas", expected, value };
      cmd = { c: c.session, s: seq, k: key, o: "cas", e: expected, v: value };
    }
    const h = { id: this.opId, key, op, call: this.now, ret: Infinity };
    const cop: ClientOp = { h, client: c, node: n, done: false, readIndex: 0 };
    try {
      this.#run(n, (core) => core.propose(encodeCommand(cmd)));
    } catch (e) {
      if (!(e instanceof RaftError)) throw e;
      // Definitely not proposed: not part of the history. Reuse the sequence number.
      c.seq--;
      this.#next(c);
      return;
    }
    if (!n.core) {
      // The node crashed while handling the proposal: the outcome is unknown.
      this.history.push(h);
      this.#finishUnknown(cop);
      return;
    }
    this.history.push(h);
    this.stats.ops++;
    n.waiters.set(`${cmd.c}:${seq}`, cop);
    this.q.push(this.now + OP_TIMEOUT, () => {
      if (cop.done) return;
      n.waiters.delete(`${cmd.c}:${seq}`);
      this.#finishUnknown(cop);
    });
  }

  #issueRead(c: Client, n: SimNode, key: string): void {
    const ctx = `r${++this.readId}`;
    const h = {
      id: ++this.opId,
      key,
      op: { kind: "read" } as RegisterOp,
      call: this.now,
      ret: Infinity,
    };
    const cop: ClientOp = { h, client: c, node: n, done: false, readIndex: 0 };
    n.readWaits.set(ctx, cop);
    try {
      this.#run(n, (core) => core.readIndex(new TextEncoder().encode(ctx)));
    } catch (e) {
      if (!(e instanceof RaftError)) throw e;
      n.readWaits.delete(ctx);
      this.#next(c);
      return;
    }
    this.history.push(h);
    this.stats.reads++;
    if (!n.core) return;
    this.q.push(this.now + OP_TIMEOUT, () => {
      if (cop.done) return;
      n.readWaits.delete(ctx);
      const i = n.readQueue.indexOf(cop);
      if (i >= 0) n.readQueue.splice(i, 1);
      this.#dropRead(cop);
    });
  }

  #serveReads(n: SimNode): void {
    if (!n.readQueue.length) return;
    const keep: ClientOp[] = [];
    for (const op of n.readQueue) {
      if (op.readIndex <= n.applied) this.#finish(op, n.fsm.read(op.h.key));
      else keep.push(op);
    }
    n.readQueue = keep;
  }

  #finish(op: ClientOp, output: string | null | boolean): void {
    if (op.done) return;
    op.done = true;
    op.h.ret = this.now;
    op.h.output = output;
    this.stats.opsOk++;
    this.#next(op.client);
  }

  #finishUnknown(op: ClientOp): void {
    if (op.done) return;
    op.done = true;
    op.h.ret = Infinity;
    this.stats.opsUnknown++;
    // The client cannot know whether the command applied: continue under a fresh session.
    op.client.session = `c${op.client.id}.${++op.client.sessions}`;
    op.client.seq = 0;
    this.#next(op.client);
  }

  #dropRead(op: ClientOp): void {
    if (op.done) return;
    op.done = true;
    op.h.ret = Infinity;
    this.#next(op.client);
  }

  // ---- membership -------------------------------------------------------------------------

  #membershipTick(): void {
    if (this.healed || !this.membership) return;
    this.q.push(this.now + this.rng.int(100, 500), () => this.#membershipTick());
    const leader = [...this.nodes.values()]
      .filter((n) => n.core?.role === RaftRole.Leader)
      .sort((a, b) => b.core!.term - a.core!.term)[0];
    if (!leader) return;
    const cfg = leader.core!.config;
    const n = this.cfg.nodes;
    let cc: ConfChange | null = null;
    const r = this.rng.next();
    if (cfg.learners.length && r < 0.4 && cfg.voters.length < n + 1) {
      cc = { type: "promote", node: this.rng.pick(cfg.learners) };
    } else if (r < 0.7 && cfg.voters.length + cfg.learners.length < n + 2) {
      const id = `n${this.nextNodeId++}`;
      this.#addNode(id, new MemoryStorage(emptyState()));
      cc = { type: "addLearner", node: id };
    } else if (cfg.voters.length > Math.max(2, n - 1)) {
      cc = { type: "remove", node: this.rng.pick(cfg.voters) };
    } else if (cfg.learners.length) {
      cc = { type: "remove", node: this.rng.pick(cfg.learners) };
    }
    if (!cc) return;
    const change = cc;
    try {
      this.#run(leader, (core) => core.proposeConfChange(change));
    } catch (e) {
      if (!(e instanceof RaftError)) throw e;
    }
  }

  // ---- healing and liveness ---------------------------------------------------------------

  #heal(): void {
    this.healed = true;
    this.blocked.clear();
    for (const n of this.nodes.values()) if (!n.core && !n.retired) this.#start(n);
  }

  #livenessDone(): boolean {
    const cfg = this.committedConfig.config;
    if (
      this.probe.sent && [...cfg.voters, ...cfg.learners].every((id) => this.probe.applied.has(id))
    ) {
      return true;
    }
    const leader = [...this.nodes.values()].find((n) =>
      n.core?.role === RaftRole.Leader && cfg.voters.includes(n.id)
    );
    // Re-proposed now and then: a leader deposed meanwhile may have lost it. The session makes
    // a second copy a no-op.
    if (leader && (!this.probe.sent || this.now - this.probe.at >= 50 * TICK)) {
      try {
        const cmd: Command = { c: "probe", s: 1, k: "", o: "probe", v: "" };
        this.#run(leader, (core) => core.propose(encodeCommand(cmd)));
        this.probe.sent = true;
        this.probe.at = this.now;
      } catch (e) {
        if (!(e instanceof RaftError)) throw e;
      }
    }
    return false;
  }

  #checkLogMatching(): void {
    const live = [...this.nodes.values()].filter((n) => n.core);
    for (let i = 0; i < live.length; i++) {
      for (let j = i + 1; j < live.length; j++) {
        const a = live[i].core!.log, b = live[j].core!.log;
        const lo = Math.max(a.firstIndex(), b.firstIndex());
        const hi = Math.min(a.lastIndex(), b.lastIndex());
        for (let k = hi; k >= lo; k--) {
          if (a.term(k) !== b.term(k)) continue;
          for (let x = lo; x <= k; x++) {
            if (!sameEntry(a.entry(x)!, b.entry(x)!)) {
              this.violation(
                `log matching: ${live[i].id} and ${live[j].id} agree at ${k} but differ at ${x}`,
              );
              return;
            }
          }
          break;
        }
      }
    }
  }

  // ---- main loop --------------------------------------------------------------------------

  run(): SimReport {
    const clients = this.rng.int(2, 5);
    for (let i = 0; i < clients; i++) this.#startClient(i);
    const global = () => {
      this.#partitionTick();
      if (Math.floor(this.now / TICK) % 50 === 0) this.#checkLogMatching();
      if (!this.healed) this.q.push(this.now + TICK, global);
    };
    this.q.push(TICK, global);
    if (this.membership) this.q.push(this.rng.int(100, 400), () => this.#membershipTick());

    const maxEvents = 5_000_000;
    let events = 0;
    const runUntil = (t: number, stop?: () => boolean) => {
      while (this.q.peekTime() <= t) {
        if (++events > maxEvents) {
          this.violation("event budget exhausted");
          return false;
        }
        const ev = this.q.pop()!;
        this.now = ev.t;
        ev.fn();
        if (stop && stop()) return true;
      }
      this.now = t;
      return false;
    };
    runUntil(this.faultEnd);
    this.#heal();
    const healAt = this.now;
    const limit = (this.cfg.livenessTicks ?? 300) * TICK;
    let live = false;
    for (let t = healAt + TICK; t <= healAt + limit && !live; t += TICK) {
      runUntil(t);
      live = this.#livenessDone();
    }
    if (live) this.stats.healTicks = Math.round((this.now - healAt) / TICK);
    else {
      const st = [...this.nodes.values()].filter((n) => n.core).map((n) => {
        const s = n.core!.status();
        const pr = s.role === RaftRole.Leader
          ? JSON.stringify(
            [...n.core!.progress()].map(([k, v]) => [k, v.match, v.next, v.state, v.paused]),
          )
          : "";
        return `${n.id}:${s.role}/t${s.term}/c${s.committed}/a${s.applied}/f${s.firstIndex}/l${s.lastIndex}${pr}`;
      });
      this.violation(
        `liveness: no leader committed and spread a new entry within ${limit / TICK} ticks ` +
          `of healing (${st.join(" ")}; config ${JSON.stringify(this.committedConfig.config)})`,
      );
    }
    // Let in-flight client operations finish, then check everything.
    runUntil(this.now + OP_TIMEOUT + TICK);
    this.#checkLogMatching();
    for (const h of this.history) if (h.ret !== Infinity && h.ret < h.call) h.ret = Infinity;
    const lin = checkHistory(this.history as HistoryOp[], this.cfg.maxCheckSteps ?? 1_000_000);
    this.stats.linearizability = lin.result;
    if (lin.result === "violation") {
      const lines = [...lin.ops].sort((a, b) => a.call - b.call).slice(0, 60).map((o) =>
        `  #${o.id} ${JSON.stringify(o.op)} [${o.call}, ${o.ret}] -> ${JSON.stringify(o.output)}`
      );
      this.violation(
        `linearizability: history of key ${lin.key} is not linearizable\n${lines.join("\n")}`,
      );
    }
    return {
      seed: this.cfg.seed,
      nodes: this.cfg.nodes,
      ok: this.violations.length === 0,
      violations: this.violations,
      stats: this.stats,
      profile: this.profile(),
    };
  }
}

/** Run one seed. */
export function simulate(cfg: SimConfig): SimReport {
  return new Simulation(cfg).run();
}
