/**
 * The node driver: runs one {@link RaftCore} with real time, storage, a transport and an
 * application state machine.
 *
 * One loop owns the core. Inputs (ticks, incoming messages, proposals, reads) are queued and fed
 * to the core between readies; each ready is handled strictly in order: persist (one storage
 * write), then send, then apply, then `advance()`. Proposals that arrive while a ready is being
 * persisted go into the next one together, which is the batching (group commit) that makes a
 * disk-backed log fast.
 *
 * Proposals are wrapped in a small envelope naming the proposing node and a sequence number, so
 * the proposer recognises its own entries when they are applied, wherever the leader was (and
 * never takes an entry of its previous incarnation for a new one: numbers start from the clock).
 */
import { bootstrapState, RaftCore, type RaftStatus } from "./core.ts";
import { configEquals, decodeConfChange } from "./config.ts";
import type { RaftStorage } from "./storage.ts";
import {
  type ConfChange,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  type NodeId,
  RaftError,
  RaftRole,
  type Ready,
} from "./types.ts";

/** The replicated application. `apply` must be deterministic. */
export interface StateMachine {
  /**
   * Apply one committed entry (data is what was proposed). The result is handed to the
   * proposer's `propose()` promise. A throw is treated as a deterministic result: it rejects
   * that promise and the log moves on.
   */
  apply(entry: Entry): Promise<unknown> | unknown;
  /** Serialise the state as of the last applied entry. */
  snapshot(): Promise<Uint8Array>;
  /** Replace the whole state with a snapshot's. */
  restore(data: Uint8Array): Promise<void>;
}

/** Carries raft messages between nodes. Delivery may be lossy and out of order. */
export interface Transport {
  send(to: NodeId, messages: readonly Message[]): void;
  onMessage(handler: (from: NodeId, messages: readonly Message[]) => void): void;
  close(): void;
}

export interface RaftNodeOptions {
  readonly id: NodeId;
  readonly storage: RaftStorage;
  readonly transport: Transport;
  readonly stateMachine: StateMachine;
  /** Founding voters, used only if the storage is empty. Omit when joining a cluster. */
  readonly bootstrap?: readonly NodeId[];
  readonly tickMs?: number;
  readonly electionTick?: number;
  readonly heartbeatTick?: number;
  /** How long propose(), read() and conf changes may wait before rejecting. */
  readonly requestTimeoutMs?: number;
  /** Take a snapshot and compact after this many applied entries. */
  readonly snapshotEvery?: number;
  /** Entries kept behind a snapshot for followers that lag a little. */
  readonly keepEntries?: number;
  readonly maxSizePerMsg?: number;
  readonly maxInflightMsgs?: number;
  readonly maxSnapshotPiece?: number;
  readonly random?: () => number;
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingProposal {
  readonly seq: number;
  readonly data: Uint8Array;
  submittedTo: NodeId;
}

interface PendingRead {
  readonly ctx: Uint8Array;
  readonly key: string;
  index: number;
  issuedTo: NodeId;
}

const ENVELOPE_VERSION = 1;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Wrap proposal data with its origin so the proposer can recognise it when applied. */
export function wrapProposal(origin: NodeId, seq: number, data: Uint8Array): Uint8Array {
  const o = enc.encode(origin);
  const out = new Uint8Array(1 + 2 + o.length + 8 + data.length);
  const dv = new DataView(out.buffer);
  out[0] = ENVELOPE_VERSION;
  dv.setUint16(1, o.length);
  out.set(o, 3);
  dv.setFloat64(3 + o.length, seq);
  out.set(data, 11 + o.length);
  return out;
}

/** Inverse of {@link wrapProposal}; throws a Decode error on foreign bytes. */
export function unwrapProposal(b: Uint8Array): { origin: NodeId; seq: number; data: Uint8Array } {
  if (b.length < 11 || b[0] !== ENVELOPE_VERSION) {
    throw new RaftError("Decode", "proposal envelope: bad version or too short");
  }
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = dv.getUint16(1);
  if (b.length < 11 + n) throw new RaftError("Decode", "proposal envelope: truncated");
  return {
    origin: dec.decode(b.subarray(3, 3 + n)),
    seq: dv.getFloat64(3 + n),
    data: b.subarray(11 + n),
  };
}

export class RaftNode {
  readonly id: NodeId;
  readonly #o: RaftNodeOptions;
  readonly #core: RaftCore;
  readonly #sm: StateMachine;
  readonly #storage: RaftStorage;
  readonly #transport: Transport;
  readonly #timeoutMs: number;
  readonly #snapshotEvery: number;
  readonly #keepEntries: number;

  #inbox: Message[] = [];
  #ticks = 0;
  #unsent: PendingProposal[] = [];
  #proposals = new Map<number, Waiter<unknown> & { p: PendingProposal }>();
  /**
   * Proposal numbers start from the clock in microseconds: an entry the previous incarnation of
   * this node proposed may be applied after a restart, and had its number been reused, its
   * result would have resolved (or refused) a new proposal instead of that proposal's own.
   */
  #seq = Date.now() * 1000;
  #confWaiters: (Waiter<void> & { cc: ConfChange; submitted: boolean })[] = [];
  #reads = new Map<string, Waiter<void> & { r: PendingRead }>();
  #readSeq = 0;
  #transfers: NodeId[] = [];
  #applied: number;
  #lastSnapshotIndex: number;
  #running = false;
  #stopped = false;
  #error: Error | null = null;
  #tickTimer: ReturnType<typeof setTimeout> | undefined;
  #lastLead: NodeId = "";
  /** Hard state as last written to storage. */
  #saved: HardState;
  #idle: (() => void)[] = [];

  private constructor(o: RaftNodeOptions, core: RaftCore, applied: number) {
    this.id = o.id;
    this.#o = o;
    this.#core = core;
    this.#sm = o.stateMachine;
    this.#storage = o.storage;
    this.#transport = o.transport;
    this.#timeoutMs = o.requestTimeoutMs ?? 10_000;
    this.#snapshotEvery = o.snapshotEvery ?? 10_000;
    this.#keepEntries = o.keepEntries ?? 1_000;
    this.#applied = applied;
    this.#lastSnapshotIndex = applied;
    const st = core.status();
    this.#saved = { term: st.term, vote: st.vote, commit: st.committed };
  }

  /** Load (or bootstrap) durable state, restore the state machine and start ticking. */
  static async start(o: RaftNodeOptions): Promise<RaftNode> {
    let state = await o.storage.load();
    const empty = state.hardState.term === 0 && state.entries.length === 0 && !state.snapshot;
    if (empty && o.bootstrap && o.bootstrap.length) {
      const b = bootstrapState(o.bootstrap);
      await o.storage.save({ hardState: b.hardState, snapshot: null, entries: b.entries });
      state = await o.storage.load();
    }
    const core = new RaftCore({
      id: o.id,
      electionTick: o.electionTick,
      heartbeatTick: o.heartbeatTick,
      random: o.random ?? Math.random,
      maxSizePerMsg: o.maxSizePerMsg,
      maxInflightMsgs: o.maxInflightMsgs,
      maxSnapshotPiece: o.maxSnapshotPiece,
    }, state);
    if (state.snapshot) await o.stateMachine.restore(state.snapshot.data);
    const node = new RaftNode(o, core, core.log.applied);
    o.transport.onMessage((_from, ms) => node.#receive(ms));
    node.#scheduleTick();
    return node;
  }

  status(): RaftStatus {
    return this.#core.status();
  }

  /** Why the node stopped by itself (a storage failure or a broken invariant), if it did. */
  get error(): Error | null {
    return this.#error;
  }

  /**
   * Replicate `data` and resolve with the state machine's result once it is applied on this
   * node. Rejects with code "Timeout" or "LeaderLost" when the outcome is unknown (the entry may
   * still be applied later, so commands should be idempotent or conditional), or "Stopped".
   */
  propose(data: Uint8Array): Promise<unknown> {
    this.#mustRun();
    const seq = ++this.#seq;
    const p: PendingProposal = { seq, data: wrapProposal(this.id, seq, data), submittedTo: "" };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#proposals.delete(seq);
        this.#unsent = this.#unsent.filter((u) => u !== p);
        reject(new RaftError("Timeout", `proposal ${seq} timed out; outcome unknown`));
      }, this.#timeoutMs);
      this.#proposals.set(seq, { resolve, reject, timer, p });
      this.#unsent.push(p);
      this.#wake();
    });
  }

  /**
   * A linearizable read barrier (ReadIndex): resolves once this node's state machine reflects
   * every write committed before the call, so reading it afterwards is linearizable.
   */
  readBarrier(): Promise<void> {
    this.#mustRun();
    const n = ++this.#readSeq;
    const ctx = enc.encode(`${this.id}/${n}`);
    const key = `${this.id}/${n}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#reads.delete(key);
        reject(new RaftError("Timeout", "read timed out"));
      }, this.#timeoutMs);
      this.#reads.set(key, { resolve, reject, timer, r: { ctx, key, index: -1, issuedTo: "" } });
      this.#wake();
    });
  }

  /** Run `fn` against the local state machine after a read barrier. */
  async read<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.readBarrier();
    return await fn();
  }

  /** Propose a membership change; resolves once it is applied on this node. */
  proposeConfChange(cc: ConfChange): Promise<void> {
    this.#mustRun();
    return new Promise((resolve, reject) => {
      const w = {
        resolve,
        reject,
        cc,
        submitted: false,
        timer: setTimeout(() => {
          this.#confWaiters = this.#confWaiters.filter((x) => x !== w);
          reject(new RaftError("Timeout", "membership change timed out; outcome unknown"));
        }, this.#timeoutMs),
      };
      this.#confWaiters.push(w);
      this.#wake();
    });
  }

  /** Ask the leader to hand leadership to `target`. */
  transferLeader(target: NodeId): void {
    this.#mustRun();
    this.#transfers.push(target);
    this.#wake();
  }

  /** Trigger an election now (tests and tools; normally timers do this). */
  campaign(): void {
    this.#mustRun();
    this.#core.campaign();
    this.#wake();
  }

  /** Resolves once the loop has nothing left to do. */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  /** Stop timers and the transport; pending requests reject with "Stopped". */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#tickTimer);
    await this.idle();
    this.#transport.close();
    this.#failAll(new RaftError("Stopped", "node stopped"));
  }

  // ---- loop -------------------------------------------------------------------------------

  #mustRun(): void {
    if (this.#stopped) throw this.#error ?? new RaftError("Stopped", "node stopped");
  }

  #scheduleTick(): void {
    if (this.#stopped) return;
    this.#tickTimer = setTimeout(() => {
      this.#ticks++;
      this.#wake();
      this.#scheduleTick();
    }, this.#o.tickMs ?? 100);
  }

  #receive(ms: readonly Message[]): void {
    if (this.#stopped) return;
    for (const m of ms) if (m.to === this.id) this.#inbox.push(m);
    this.#wake();
  }

  #wake(): void {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    queueMicrotask(() => {
      this.#loop().catch((e) => this.#fail(e as Error));
    });
  }

  async #loop(): Promise<void> {
    try {
      for (;;) {
        if (this.#stopped && this.#error) return;
        this.#feed();
        if (!this.#core.hasReady()) break;
        await this.#handle(this.#core.ready());
      }
    } finally {
      this.#running = false;
      const idle = this.#idle;
      this.#idle = [];
      for (const r of idle) r();
    }
  }

  /** Feed queued inputs to the core. */
  #feed(): void {
    const core = this.#core;
    for (; this.#ticks > 0; this.#ticks--) core.tick();
    const inbox = this.#inbox;
    this.#inbox = [];
    for (const m of inbox) core.step(m);

    // Leadership changed: forwarded work may have been lost with the old leader.
    const lead = core.lead;
    if (lead !== this.#lastLead) {
      this.#lastLead = lead;
      for (const w of this.#proposals.values()) {
        if (w.p.submittedTo !== "" && w.p.submittedTo !== lead) {
          this.#proposals.delete(w.p.seq);
          clearTimeout(w.timer);
          w.reject(new RaftError("LeaderLost", "leader changed; outcome unknown"));
        }
      }
      for (const w of this.#reads.values()) {
        if (w.r.index < 0) w.r.issuedTo = ""; // re-issue: reads are idempotent
      }
    }
    if (lead === "") return;

    if (this.#unsent.length) {
      const batch = this.#unsent;
      try {
        core.propose(batch.map((p) => p.data));
        this.#unsent = [];
        for (const p of batch) p.submittedTo = lead;
      } catch (e) {
        if (!(e instanceof RaftError)) throw e;
        // No leader or a transfer in progress: retry on the next tick.
      }
    }
    for (const w of this.#confWaiters) {
      if (w.submitted) continue;
      try {
        core.proposeConfChange(w.cc);
        w.submitted = true;
      } catch (e) {
        if (!(e instanceof RaftError)) throw e;
        // ProposalDropped means "not now" (no leader, or an earlier change is in flight).
        if (e.code === "ConfChangeRejected") {
          this.#confWaiters = this.#confWaiters.filter((x) => x !== w);
          clearTimeout(w.timer);
          w.reject(e);
        }
      }
    }
    for (const w of this.#reads.values()) {
      if (w.r.issuedTo !== "" || w.r.index >= 0) continue;
      try {
        core.readIndex(w.r.ctx);
        w.r.issuedTo = lead;
      } catch (e) {
        if (!(e instanceof RaftError)) throw e;
      }
    }
    for (const t of this.#transfers.splice(0)) {
      try {
        core.transferLeader(t);
      } catch (e) {
        if (!(e instanceof RaftError)) throw e;
      }
    }
  }

  async #handle(rd: Ready): Promise<void> {
    // A ready whose only durable change is a higher commit index is not written: the commit
    // index is volatile knowledge (a restarted node relearns it from the leader), and skipping
    // that write takes one fsync off every commit's critical path. The next write carries it.
    const hs = rd.hardState;
    const termOrVote = hs !== null &&
      (hs.term !== this.#saved.term || hs.vote !== this.#saved.vote);
    if (rd.entries.length || rd.snapshot || termOrVote) {
      const hardState = hs ?? { ...this.#saved, commit: this.#core.log.committed };
      await this.#storage.save({ hardState, snapshot: rd.snapshot, entries: rd.entries });
      this.#saved = hardState;
    }
    if (rd.messages.length) {
      const byPeer = new Map<NodeId, Message[]>();
      for (const m of rd.messages) {
        let l = byPeer.get(m.to);
        if (!l) byPeer.set(m.to, l = []);
        l.push(m);
      }
      for (const [to, ms] of byPeer) this.#transport.send(to, ms);
    }
    if (rd.snapshot) {
      await this.#sm.restore(rd.snapshot.data);
      this.#applied = rd.snapshot.meta.index;
      this.#lastSnapshotIndex = rd.snapshot.meta.index;
    }
    for (const e of rd.committed) await this.#apply(e);
    for (const rs of rd.readStates) {
      const w = this.#reads.get(dec.decode(rs.context));
      if (w) w.r.index = rs.index;
    }
    this.#core.advance(rd);
    this.#serveReads();
    if (this.#applied - this.#lastSnapshotIndex >= this.#snapshotEvery) {
      const data = await this.#sm.snapshot();
      const c = this.#core.compact(this.#applied, data, this.#keepEntries);
      await this.#storage.compact(c);
      this.#lastSnapshotIndex = this.#applied;
    }
  }

  async #apply(e: Entry): Promise<void> {
    this.#applied = e.index;
    if (e.type === EntryType.ConfChange) {
      let cc: ConfChange;
      try {
        cc = decodeConfChange(e.data);
      } catch {
        return;
      }
      const w = this.#confWaiters.find((x) => sameChange(x.cc, cc));
      if (w) {
        this.#confWaiters = this.#confWaiters.filter((x) => x !== w);
        clearTimeout(w.timer);
        w.resolve();
      }
      return;
    }
    if (e.data.length === 0) return; // a new leader's empty entry
    const { origin, seq, data } = unwrapProposal(e.data);
    let result: unknown;
    let error: Error | null = null;
    try {
      result = await this.#sm.apply({ index: e.index, term: e.term, type: e.type, data });
    } catch (err) {
      error = err as Error;
    }
    if (origin !== this.id) return;
    const w = this.#proposals.get(seq);
    if (!w) return;
    this.#proposals.delete(seq);
    clearTimeout(w.timer);
    if (error) w.reject(error);
    else w.resolve(result);
  }

  #serveReads(): void {
    for (const [key, w] of this.#reads) {
      if (w.r.index >= 0 && w.r.index <= this.#applied) {
        this.#reads.delete(key);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  }

  #fail(e: Error): void {
    this.#error = e;
    this.#stopped = true;
    clearTimeout(this.#tickTimer);
    this.#transport.close();
    this.#failAll(e);
  }

  #failAll(e: Error): void {
    for (const w of this.#proposals.values()) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.#proposals.clear();
    this.#unsent = [];
    for (const w of this.#reads.values()) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.#reads.clear();
    for (const w of this.#confWaiters) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.#confWaiters = [];
  }

  /** True while this node believes it leads. */
  isLeader(): boolean {
    return this.#core.role === RaftRole.Leader;
  }
}

function sameChange(a: ConfChange, b: ConfChange): boolean {
  if (a.type !== b.type) return false;
  if (a.type === "init" || b.type === "init") {
    return a.type === "init" && b.type === "init" &&
      configEquals({ voters: a.voters, learners: [] }, { voters: b.voters, learners: [] });
  }
  return a.node === b.node;
}

/** An in-process network of transports, for tests and benchmarks. */
export class InMemoryNetwork {
  readonly #handlers = new Map<NodeId, (from: NodeId, ms: readonly Message[]) => void>();
  readonly #cut = new Set<string>();

  /** The transport of node `id`. */
  transport(id: NodeId): Transport {
    return {
      send: (to, ms) => {
        if (this.#cut.has(`${id}>${to}`)) return;
        const h = this.#handlers.get(to);
        if (!h) return;
        queueMicrotask(() => {
          if (!this.#cut.has(`${id}>${to}`)) h(id, ms);
        });
      },
      onMessage: (handler) => {
        this.#handlers.set(id, handler);
      },
      close: () => {
        this.#handlers.delete(id);
      },
    };
  }

  /** Drop every message between `a` and `b` (both directions) until healed. */
  cut(a: NodeId, b: NodeId): void {
    this.#cut.add(`${a}>${b}`);
    this.#cut.add(`${b}>${a}`);
  }

  heal(): void {
    this.#cut.clear();
  }
}
