/**
 * The Raft consensus core, in the style of etcd-io/raft: a deterministic state machine with no
 * I/O, no timers and no randomness of its own. The driver feeds it `step(message)`, `tick()`,
 * `propose(data)` and `readIndex(context)`, then collects a {@link Ready} (what to persist, send
 * and apply) and calls `advance()` once it has done all of it.
 *
 * Features: leader election with pre-vote and check-quorum (a partitioned node cannot disrupt a
 * healthy cluster), log replication with fast conflict backtracking, the current-term commit
 * rule, flow control (in-flight window and message size limit), proposal forwarding, leader
 * transfer, ReadIndex, snapshots sent in pieces, and membership change.
 *
 * Membership changes are single-server (Raft dissertation §4.1), not joint consensus: a change
 * adds or removes at most one voter (learners are added, caught up, then promoted), so any two
 * consecutive voter sets have intersecting majorities. That is far less machinery than joint
 * consensus, which we would only need to swap several voters atomically. A change takes effect
 * as soon as it is appended to a node's log (not when committed), so every node decides with the
 * newest configuration it has seen. Two extra rules close the known single-server hole (Ongaro,
 * raft-dev 2015): a leader accepts a new change only once an entry of its own term is committed,
 * and only when no earlier change is still uncommitted.
 */
import {
  decodeConfChange,
  encodeConfChange,
  isVoter,
  members,
  quorumIndex,
  validateConfChange,
  voteResult,
} from "./config.ts";
import { entrySize, RaftLog } from "./log.ts";
import { Progress } from "./progress.ts";
import {
  type ConfChange,
  type Entry,
  EntryType,
  type HardState,
  type MembershipConfig,
  type Message,
  message,
  MessageType,
  type NodeId,
  type PersistedState,
  RaftError,
  RaftRole,
  type ReadState,
  type Ready,
  type Snapshot,
  type SnapshotPiece,
} from "./types.ts";

/** Deliberately wrong rules, for proving that the simulation's checkers catch them. */
export interface UnsafeOptions {
  /**
   * Commit an entry of an earlier term once a majority holds it, and skip the new leader's
   * empty entry: the leader of the Raft paper's Figure 8.
   */
  readonly commitPreviousTerm?: boolean;
  /** Grant votes without checking that the candidate's log is at least as up to date. */
  readonly voteWithoutLogCheck?: boolean;
}

export interface RaftOptions {
  readonly id: NodeId;
  /** Ticks without hearing from a leader before campaigning (randomised in [n, 2n)). */
  readonly electionTick?: number;
  /** Ticks between leader heartbeats. Must be well below electionTick. */
  readonly heartbeatTick?: number;
  /** Uniform random number in [0, 1); the only source of randomness. */
  readonly random: () => number;
  readonly preVote?: boolean;
  readonly checkQuorum?: boolean;
  /** Unacknowledged appends allowed per follower in replicate state. */
  readonly maxInflightMsgs?: number;
  /** Byte budget of one append message (at least one entry is always sent). */
  readonly maxSizePerMsg?: number;
  /** Byte size of one snapshot piece. */
  readonly maxSnapshotPiece?: number;
  /** Byte budget of committed entries handed out per ready. */
  readonly maxApplyBytes?: number;
  /** Test-only fault switches. Never set these outside tests. */
  readonly unsafe?: UnsafeOptions;
}

/** Marks a vote request from a leader transfer: voters drop their leader lease for it. */
const TRANSFER_CONTEXT = new Uint8Array([0x54, 0x52]);

interface PendingRead {
  readonly seq: number;
  readonly index: number;
  readonly context: Uint8Array;
  readonly from: NodeId;
}

interface SnapshotReceive {
  readonly snapshot: SnapshotPiece["meta"];
  readonly size: number;
  readonly term: number;
  readonly from: NodeId;
  readonly parts: Uint8Array[];
  received: number;
}

/** A point-in-time view of the core, for drivers, tests and checkers. */
export interface RaftStatus {
  readonly id: NodeId;
  readonly role: RaftRole;
  readonly term: number;
  readonly vote: NodeId;
  readonly lead: NodeId;
  readonly committed: number;
  readonly applied: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly config: MembershipConfig;
  readonly leadTransferee: NodeId;
}

/** What a local compaction produced, for storage to record. */
export interface Compaction {
  readonly snapshot: Snapshot;
  readonly offset: number;
  readonly offsetTerm: number;
  readonly offsetConfig: MembershipConfig;
}

export class RaftCore {
  readonly id: NodeId;
  readonly log: RaftLog;
  #term: number;
  #vote: NodeId;
  #lead: NodeId = "";
  #role: RaftRole = RaftRole.Follower;

  readonly #electionTick: number;
  readonly #heartbeatTick: number;
  readonly #random: () => number;
  readonly #preVote: boolean;
  readonly #checkQuorum: boolean;
  readonly #maxInflight: number;
  readonly #maxSizePerMsg: number;
  readonly #maxPiece: number;
  readonly #maxApplyBytes: number;
  readonly #unsafe: UnsafeOptions;

  #electionElapsed = 0;
  #heartbeatElapsed = 0;
  #randomizedElectionTimeout = 0;
  #votes = new Map<NodeId, boolean>();
  #prs = new Map<NodeId, Progress>();
  #knownConfig: MembershipConfig;
  #leadTransferee: NodeId = "";
  #msgs: Message[] = [];
  #readStates: ReadState[] = [];
  #pendingReads: PendingRead[] = [];
  #readsAwaitingCommit: { context: Uint8Array; from: NodeId }[] = [];
  #readSeq = 0;
  #snapRecv: SnapshotReceive | null = null;
  #prevHard: HardState;

  constructor(options: RaftOptions, state: PersistedState) {
    this.id = options.id;
    this.#electionTick = options.electionTick ?? 10;
    this.#heartbeatTick = options.heartbeatTick ?? 1;
    if (this.#heartbeatTick < 1 || this.#electionTick <= this.#heartbeatTick) {
      throw new RaftError("InvalidState", "need 1 <= heartbeatTick < electionTick");
    }
    this.#random = options.random;
    this.#preVote = options.preVote ?? true;
    this.#checkQuorum = options.checkQuorum ?? true;
    this.#maxInflight = Math.max(1, options.maxInflightMsgs ?? 256);
    this.#maxSizePerMsg = Math.max(1, options.maxSizePerMsg ?? 1 << 20);
    this.#maxPiece = Math.max(1, options.maxSnapshotPiece ?? 256 << 10);
    this.#maxApplyBytes = Math.max(1, options.maxApplyBytes ?? 16 << 20);
    this.#unsafe = options.unsafe ?? {};

    this.log = new RaftLog(
      state.offset,
      state.offsetTerm,
      state.offsetConfig,
      state.entries,
      state.hardState.commit,
      state.snapshot,
    );
    // Entries are written before the hard state when one ready spans several storage
    // transactions; if the hard state's write was lost, our term must still cover our log.
    const lastTerm = this.log.lastTerm();
    if (lastTerm > state.hardState.term) {
      this.#term = lastTerm;
      this.#vote = "";
    } else {
      this.#term = state.hardState.term;
      this.#vote = state.hardState.vote;
    }
    this.#prevHard = { term: this.#term, vote: this.#vote, commit: this.log.committed };
    this.#knownConfig = this.log.config();
    this.#becomeFollower(this.#term, "");
  }

  // ---- public API -------------------------------------------------------------------------

  get term(): number {
    return this.#term;
  }
  get role(): RaftRole {
    return this.#role;
  }
  get lead(): NodeId {
    return this.#lead;
  }
  get config(): MembershipConfig {
    return this.log.config();
  }

  status(): RaftStatus {
    return {
      id: this.id,
      role: this.#role,
      term: this.#term,
      vote: this.#vote,
      lead: this.#lead,
      committed: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      config: this.log.config(),
      leadTransferee: this.#leadTransferee,
    };
  }

  /** Leader only: what it knows of each member's log (empty on followers). */
  progress(): Map<NodeId, { match: number; next: number; state: string; paused: boolean }> {
    const out = new Map<NodeId, { match: number; next: number; state: string; paused: boolean }>();
    for (const [id, pr] of this.#prs) {
      out.set(id, { match: pr.match, next: pr.next, state: pr.state, paused: pr.isPaused() });
    }
    return out;
  }

  /** Advance logical time by one tick. */
  tick(): void {
    if (this.#role === RaftRole.Leader) this.#tickLeader();
    else this.#tickElection();
  }

  /** Start an election now (if this node is a voter). */
  campaign(): void {
    if (this.#role !== RaftRole.Leader) this.#hup(false);
  }

  /**
   * Propose application data. On the leader the entries are appended; on a follower they are
   * forwarded to the leader. Throws ProposalDropped when there is no leader to take them or a
   * leader transfer is under way. Acceptance is not commitment: watch the committed entries.
   */
  propose(data: Uint8Array | readonly Uint8Array[]): void {
    const list = data instanceof Uint8Array ? [data] : data;
    if (list.length === 0) return;
    this.#proposeEntries(list.map((d) => ({ index: 0, term: 0, type: EntryType.Normal, data: d })));
  }

  /**
   * Propose a membership change. Only the leader validates and accepts changes synchronously;
   * a follower forwards it, and the leader silently drops a forwarded change it cannot accept.
   */
  proposeConfChange(cc: ConfChange): void {
    const e: Entry = { index: 0, term: 0, type: EntryType.ConfChange, data: encodeConfChange(cc) };
    if (this.#role === RaftRole.Leader) {
      const busy = this.#confChangeBusy();
      if (busy) throw new RaftError("ProposalDropped", busy);
      const why = cc.type === "init"
        ? "init cannot be proposed"
        : validateConfChange(this.log.config(), cc);
      if (why) throw new RaftError("ConfChangeRejected", why);
    }
    this.#proposeEntries([e]);
  }

  /**
   * Request a linearizable read point. A {@link ReadState} with this context appears in a later
   * ready once leadership is confirmed; the read may be served once that index is applied.
   * Requests are dropped (never answered) if leadership is lost meanwhile: callers time out.
   */
  readIndex(context: Uint8Array): void {
    if (this.#role === RaftRole.Leader) {
      this.#leaderReadIndex(context, this.id);
    } else if (this.#lead !== "") {
      this.#send(message({
        type: MessageType.ReadIndex,
        from: this.id,
        to: this.#lead,
        term: 0,
        context,
      }));
    } else {
      throw new RaftError("ProposalDropped", "no leader to serve the read");
    }
  }

  /** Ask the cluster to move leadership to `target` (a voter). */
  transferLeader(target: NodeId): void {
    const ctx = new TextEncoder().encode(target);
    if (this.#role === RaftRole.Leader) {
      this.#handleTransfer(target);
    } else if (this.#lead !== "") {
      this.#send(message({
        type: MessageType.TransferLeader,
        from: this.id,
        to: this.#lead,
        term: 0,
        context: ctx,
      }));
    } else {
      throw new RaftError("TransferRejected", "no leader known");
    }
  }

  /** Process one message from a peer. Messages for another node are rejected. */
  step(m: Message): void {
    if (m.to !== this.id) {
      throw new RaftError("InvalidState", `message for ${m.to} delivered to ${this.id}`);
    }
    this.#stepInner(m);
  }

  /** Is there anything to persist, send or apply? */
  hasReady(): boolean {
    return this.#msgs.length > 0 || this.#readStates.length > 0 ||
      this.log.pendingSnapshot !== null || this.log.stable < this.log.lastIndex() ||
      this.log.committed > this.log.applied || this.#hardStateChanged();
  }

  /** Collect the work to do. Messages and read states are handed out once. */
  ready(): Ready {
    const hs = this.#hardState();
    const rd: Ready = {
      hardState: this.#hardStateChanged() ? hs : null,
      snapshot: this.log.pendingSnapshot,
      entries: this.log.unstableEntries(),
      messages: this.#msgs,
      committed: this.log.nextCommitted(this.#maxApplyBytes),
      readStates: this.#readStates,
    };
    this.#msgs = [];
    this.#readStates = [];
    return rd;
  }

  /** Everything in `rd` was persisted, sent and applied. */
  advance(rd: Ready): void {
    if (rd.hardState) this.#prevHard = rd.hardState;
    if (rd.snapshot && this.log.pendingSnapshot === rd.snapshot) this.log.pendingSnapshot = null;
    if (rd.entries.length) {
      const last = rd.entries[rd.entries.length - 1];
      this.log.stableTo(last.index, last.term);
    }
    if (rd.committed.length) this.log.appliedTo(rd.committed[rd.committed.length - 1].index);
  }

  /**
   * Record a state-machine snapshot taken at `index` (<= applied) and drop log entries up to
   * `index - keepEntries`, keeping a tail so briefly lagging followers need no snapshot.
   */
  compact(index: number, data: Uint8Array, keepEntries = 0): Compaction {
    if (index > this.log.applied) {
      throw new RaftError(
        "InvalidState",
        `snapshot at ${index} beyond applied ${this.log.applied}`,
      );
    }
    const term = this.log.term(index);
    if (term === undefined) {
      throw new RaftError("InvalidState", `snapshot at ${index}: entry already compacted`);
    }
    const snapshot: Snapshot = { meta: { index, term, config: this.log.configAt(index) }, data };
    if (!this.log.snapshot || this.log.snapshot.meta.index < index) this.log.snapshot = snapshot;
    this.log.compact(Math.max(this.log.offset, index - Math.max(0, keepEntries)));
    return {
      snapshot: this.log.snapshot,
      offset: this.log.offset,
      offsetTerm: this.log.offsetTerm,
      offsetConfig: this.log.configAt(this.log.offset),
    };
  }

  // ---- state transitions ------------------------------------------------------------------

  #hardState(): HardState {
    return { term: this.#term, vote: this.#vote, commit: this.log.committed };
  }

  #hardStateChanged(): boolean {
    const p = this.#prevHard;
    return p.term !== this.#term || p.vote !== this.#vote || p.commit !== this.log.committed;
  }

  #reset(term: number): void {
    if (this.#term !== term) {
      this.#term = term;
      this.#vote = "";
    }
    this.#lead = "";
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    this.#randomizedElectionTimeout = this.#electionTick +
      Math.floor(this.#random() * this.#electionTick);
    this.#votes = new Map();
    this.#leadTransferee = "";
    this.#pendingReads = [];
    this.#readsAwaitingCommit = [];
    this.#prs = new Map();
  }

  #becomeFollower(term: number, lead: NodeId): void {
    this.#reset(term);
    this.#role = RaftRole.Follower;
    this.#lead = lead;
  }

  #becomePreCandidate(): void {
    // Pre-vote changes neither term nor vote: a node that cannot win does not disrupt anyone.
    this.#role = RaftRole.PreCandidate;
    this.#votes = new Map();
    this.#lead = "";
  }

  #becomeCandidate(): void {
    this.#reset(this.#term + 1);
    this.#vote = this.id;
    this.#role = RaftRole.Candidate;
  }

  #becomeLeader(): void {
    this.#reset(this.#term);
    this.#role = RaftRole.Leader;
    this.#lead = this.id;
    this.#rebuildProgress();
    // The empty entry commits the new term, which also commits everything before it
    // (the current-term commit rule) and unlocks ReadIndex and membership changes.
    // The unsafe Figure-8 leader skips it, as in the paper's figure: with the empty entry the
    // wrong commit rule is only exposed for one round trip after each election.
    if (this.#unsafe.commitPreviousTerm) {
      this.#bcastAppend();
      return;
    }
    this.#appendAsLeader([{ index: 0, term: 0, type: EntryType.Normal, data: new Uint8Array() }]);
  }

  #rebuildProgress(): void {
    const last = this.log.lastIndex();
    const old = this.#prs;
    this.#prs = new Map();
    for (const id of members(this.log.config())) {
      const pr = old.get(id) ?? new Progress(last + 1, this.#maxInflight);
      this.#prs.set(id, pr);
    }
    const self = this.#prs.get(this.id);
    if (self) {
      self.match = last;
      self.next = last + 1;
      self.becomeReplicate();
    }
    this.#knownConfig = this.log.config();
  }

  /** React to the configuration in force having changed (appended or truncated away). */
  #configMaybeChanged(): void {
    const cfg = this.log.config();
    if (cfg === this.#knownConfig) return;
    this.#knownConfig = cfg;
    if (this.#role === RaftRole.Leader) {
      this.#rebuildProgress();
      if (this.#leadTransferee && !isVoter(cfg, this.#leadTransferee)) this.#leadTransferee = "";
      // A smaller quorum may already hold entries we could not commit before.
      if (this.#maybeCommit()) this.#bcastAppend();
    }
  }

  #promotable(): boolean {
    return isVoter(this.log.config(), this.id) && this.log.pendingSnapshot === null;
  }

  // ---- ticks ------------------------------------------------------------------------------

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.#promotable() && this.#electionElapsed >= this.#randomizedElectionTimeout) {
      this.#electionElapsed = 0;
      this.#hup(false);
    }
  }

  #tickLeader(): void {
    this.#heartbeatElapsed++;
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#electionTick) {
      this.#electionElapsed = 0;
      if (this.#checkQuorum) {
        if (!this.#quorumActive()) {
          this.#becomeFollower(this.#term, "");
          return;
        }
      }
      this.#leadTransferee = "";
    }
    if (this.#heartbeatElapsed >= this.#heartbeatTick) {
      this.#heartbeatElapsed = 0;
      this.#bcastHeartbeat();
    }
  }

  #quorumActive(): boolean {
    const cfg = this.log.config();
    let active = 0;
    for (const id of cfg.voters) {
      const pr = this.#prs.get(id);
      if (id === this.id || pr?.recentActive) active++;
    }
    for (const [id, pr] of this.#prs) if (id !== this.id) pr.recentActive = false;
    return active >= Math.floor(cfg.voters.length / 2) + 1;
  }

  // ---- elections --------------------------------------------------------------------------

  #hup(transfer: boolean): void {
    if (!this.#promotable()) return;
    if (this.#preVote && !transfer) this.#campaignPre();
    else this.#campaignVote(transfer);
  }

  #campaignPre(): void {
    this.#becomePreCandidate();
    this.#votes.set(this.id, true);
    if (this.#checkVotes(MessageType.PreVoteResp)) return;
    for (const id of this.log.config().voters) {
      if (id === this.id) continue;
      this.#send(message({
        type: MessageType.PreVote,
        from: this.id,
        to: id,
        term: this.#term + 1,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
      }));
    }
  }

  #campaignVote(transfer: boolean): void {
    this.#becomeCandidate();
    this.#votes.set(this.id, true);
    if (this.#checkVotes(MessageType.VoteResp)) return;
    for (const id of this.log.config().voters) {
      if (id === this.id) continue;
      this.#send(message({
        type: MessageType.Vote,
        from: this.id,
        to: id,
        term: this.#term,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        context: transfer ? TRANSFER_CONTEXT : null,
      }));
    }
  }

  /** Act on the votes so far. Returns true if the round is decided. */
  #checkVotes(kind: MessageType): boolean {
    const r = voteResult(this.log.config(), this.#votes);
    if (r === "won") {
      if (kind === MessageType.PreVoteResp) this.#campaignVote(false);
      else this.#becomeLeader();
      return true;
    }
    if (r === "lost") {
      this.#becomeFollower(this.#term, "");
      return true;
    }
    return false;
  }

  // ---- message handling -------------------------------------------------------------------

  #send(m: Message): void {
    // Requests carry our term; vote-family messages and local forwards set their own.
    const keepTerm = m.type === MessageType.PreVote || m.type === MessageType.PreVoteResp ||
      m.type === MessageType.VoteResp || m.type === MessageType.Vote;
    const fwd = m.type === MessageType.Prop || m.type === MessageType.ReadIndex ||
      m.type === MessageType.TransferLeader;
    this.#msgs.push(keepTerm ? m : { ...m, term: fwd ? 0 : this.#term });
  }

  #stepInner(m: Message): void {
    // Forwarded requests carry term 0 and skip term checks entirely.
    if (m.term === 0) {
      this.#stepLocalish(m);
      return;
    }
    if (m.term > this.#term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = m.context !== null && equalBytes(m.context, TRANSFER_CONTEXT);
        const inLease = this.#checkQuorum && this.#lead !== "" &&
          this.#electionElapsed < this.#electionTick;
        // Leader lease: we heard from a live leader recently, so this candidate is partitioned
        // or removed; ignoring it keeps it from disrupting the cluster.
        if (!force && inLease) return;
      }
      if (m.type === MessageType.PreVote) {
        // Never change term for a pre-vote.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // A granted pre-vote echoes the future term we asked about.
      } else if (
        m.type === MessageType.App || m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snap
      ) {
        this.#becomeFollower(m.term, m.from);
      } else {
        this.#becomeFollower(m.term, "");
      }
    } else if (m.term < this.#term) {
      if (
        (this.#checkQuorum || this.#preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.App)
      ) {
        // A stale leader (e.g. just out of a partition) learns of the new term from this and
        // steps down; without it pre-vote could leave it stuck.
        this.#send(message({ type: MessageType.AppResp, from: this.id, to: m.from, term: 0 }));
      } else if (m.type === MessageType.PreVote) {
        this.#send(message({
          type: MessageType.PreVoteResp,
          from: this.id,
          to: m.from,
          term: this.#term,
          reject: true,
        }));
      }
      return;
    }

    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      this.#handleVoteRequest(m);
      return;
    }
    switch (this.#role) {
      case RaftRole.Leader:
        this.#stepLeader(m);
        break;
      case RaftRole.Candidate:
      case RaftRole.PreCandidate:
        this.#stepCandidate(m);
        break;
      case RaftRole.Follower:
        this.#stepFollower(m);
        break;
    }
  }

  #handleVoteRequest(m: Message): void {
    const canVote = this.#vote === m.from ||
      (this.#vote === "" && this.#lead === "") ||
      (m.type === MessageType.PreVote && m.term > this.#term);
    const logOk = this.#unsafe.voteWithoutLogCheck || this.log.isUpToDate(m.index, m.logTerm);
    const respType = m.type === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
    if (canVote && logOk) {
      this.#send(message({ type: respType, from: this.id, to: m.from, term: m.term }));
      if (m.type === MessageType.Vote) {
        this.#electionElapsed = 0;
        this.#vote = m.from;
      }
    } else {
      this.#send(message({
        type: respType,
        from: this.id,
        to: m.from,
        term: this.#term,
        reject: true,
      }));
    }
  }

  /** Forwarded requests (term 0): proposals, reads and transfer requests. */
  #stepLocalish(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        // Forward at most once more, never back to the sender: stale leader hints must not
        // make a proposal bounce between two nodes.
        if (this.#role !== RaftRole.Leader && this.#lead === m.from) return;
        try {
          this.#proposeEntries(m.entries);
        } catch (e) {
          if (!(e instanceof RaftError)) throw e;
          // Forwarded proposals are dropped silently; the proposer times out.
        }
        return;
      case MessageType.ReadIndex:
        if (m.context === null) return;
        // Only the leader answers; a misdirected request is dropped and the reader retries.
        if (this.#role === RaftRole.Leader) this.#leaderReadIndex(m.context, m.from);
        return;
      case MessageType.TransferLeader: {
        if (m.context === null) return;
        const target = new TextDecoder().decode(m.context);
        if (this.#role === RaftRole.Leader) this.#handleTransfer(target);
        return;
      }
      default:
        return;
    }
  }

  #proposeEntries(entries: readonly Entry[]): void {
    if (this.#role === RaftRole.Leader) {
      if (this.#leadTransferee !== "") {
        throw new RaftError("ProposalDropped", "leader transfer in progress");
      }
      // Conf changes a leader cannot accept are dropped from forwarded batches.
      const cfg = this.log.config();
      let pendingConf = this.log.configIndex() > this.log.committed;
      const accepted: Entry[] = [];
      for (const e of entries) {
        if (e.type === EntryType.ConfChange) {
          let cc: ConfChange;
          try {
            cc = decodeConfChange(e.data);
          } catch {
            continue;
          }
          if (pendingConf || this.#confChangeBusy() !== null) continue;
          if (cc.type === "init" || validateConfChange(cfg, cc) !== null) continue;
          // One change per batch: the next must wait for this one to commit.
          pendingConf = true;
        }
        accepted.push(e);
      }
      if (accepted.length) this.#appendAsLeader(accepted);
      return;
    }
    if (this.#lead === "") throw new RaftError("ProposalDropped", "no leader");
    this.#send(message({
      type: MessageType.Prop,
      from: this.id,
      to: this.#lead,
      term: 0,
      entries: entries.map((e) => ({ index: 0, term: 0, type: e.type, data: e.data })),
    }));
  }

  /** Why the leader cannot accept any membership change right now, or null. */
  #confChangeBusy(): string | null {
    if (this.log.configIndex() > this.log.committed) {
      return "a previous membership change is not committed yet";
    }
    if (this.log.term(this.log.committed) !== this.#term) {
      return "the leader has not committed an entry in its term yet";
    }
    return null;
  }

  #appendAsLeader(entries: readonly Entry[]): void {
    let index = this.log.lastIndex();
    const stamped = entries.map((e) => ({
      index: ++index,
      term: this.#term,
      type: e.type,
      data: e.data,
    }));
    this.log.append(stamped);
    const self = this.#prs.get(this.id);
    if (self) self.maybeUpdate(this.log.lastIndex());
    this.#configMaybeChanged();
    if (this.#role !== RaftRole.Leader) return;
    this.#maybeCommit();
    this.#bcastAppend();
  }

  #maybeCommit(): boolean {
    const cfg = this.log.config();
    const mci = quorumIndex(cfg, (id) => {
      if (id === this.id) return this.log.lastIndex();
      return this.#prs.get(id)?.match ?? 0;
    });
    if (mci <= this.log.committed) return false;
    if (!this.#unsafe.commitPreviousTerm && this.log.term(mci) !== this.#term) return false;
    this.log.commitTo(mci);
    this.#afterCommit();
    return true;
  }

  #afterCommit(): void {
    if (this.#role !== RaftRole.Leader) return;
    if (this.log.term(this.log.committed) === this.#term && this.#readsAwaitingCommit.length) {
      const waiting = this.#readsAwaitingCommit;
      this.#readsAwaitingCommit = [];
      for (const r of waiting) this.#leaderReadIndex(r.context, r.from);
    }
    const cfg = this.log.config();
    if (!isVoter(cfg, this.id) && this.log.configIndex() <= this.log.committed) {
      // Our own removal is committed: the remaining voters elect a leader among themselves.
      this.#bcastAppend();
      this.#becomeFollower(this.#term, "");
    }
  }

  #stepLeader(m: Message): void {
    const pr = this.#prs.get(m.from);
    switch (m.type) {
      case MessageType.AppResp:
        if (pr) this.#handleAppResp(m, pr);
        return;
      case MessageType.HeartbeatResp:
        if (pr) this.#handleHeartbeatResp(m, pr);
        return;
      case MessageType.SnapResp:
        if (pr) this.#handleSnapResp(m, pr);
        return;
      default:
        return;
    }
  }

  #handleAppResp(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      let hint = m.rejectHint;
      if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm)[0];
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.#sendAppend(m.from, pr, true);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    const updated = pr.maybeUpdate(m.index);
    if (!updated && !(pr.match === m.index && pr.state === "probe")) return;
    if (pr.state === "probe") pr.becomeReplicate();
    else if (
      pr.state === "snapshot" &&
      (pr.match + 1 >= this.log.firstIndex() || pr.match >= pr.snap!.snapshot.meta.index)
    ) {
      // The snapshot landed (or is no longer needed). If we compacted past it meanwhile, the
      // next append finds the gap and starts a newer snapshot.
      pr.becomeProbe();
    } else if (pr.state === "replicate") pr.freeTo(m.index);

    if (this.#maybeCommit()) {
      if (this.#role !== RaftRole.Leader) return;
      this.#bcastAppend();
    } else if (wasPaused) {
      this.#sendAppend(m.from, pr, false);
    }
    while (this.#sendAppend(m.from, pr, false)) { /* fill the in-flight window */ }
    if (m.from === this.#leadTransferee && pr.match === this.log.lastIndex()) {
      this.#send(message({ type: MessageType.TimeoutNow, from: this.id, to: m.from, term: 0 }));
    }
  }

  #handleHeartbeatResp(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (pr.state === "probe") pr.paused = false;
    // The follower is alive: if the window is full, an append was probably lost. Freeing one
    // slot lets the next append go out; a gap makes the follower reject it and we probe.
    if (pr.state === "replicate" && pr.isPaused()) pr.inflight.shift();
    if (m.index > pr.readAck) pr.readAck = m.index;
    if (pr.match < this.log.lastIndex()) this.#sendAppend(m.from, pr, true);
    this.#releaseReads();
  }

  #handleSnapResp(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (pr.state !== "snapshot" || !pr.snap || pr.snap.snapshot.meta.index !== m.index) return;
    if (m.reject) {
      pr.becomeProbe();
      this.#sendAppend(m.from, pr, true);
      return;
    }
    pr.snap.acked = Math.min(m.rejectHint, pr.snap.snapshot.data.length);
    pr.snap.idle = 0;
    this.#sendSnapPiece(m.from, pr);
  }

  #stepCandidate(m: Message): void {
    switch (m.type) {
      case MessageType.App:
      case MessageType.Heartbeat:
      case MessageType.Snap:
        this.#becomeFollower(m.term, m.from);
        this.#stepFollower(m);
        return;
      case MessageType.PreVoteResp:
        if (this.#role !== RaftRole.PreCandidate) return;
        this.#votes.set(m.from, !m.reject);
        this.#checkVotes(MessageType.PreVoteResp);
        return;
      case MessageType.VoteResp:
        if (this.#role !== RaftRole.Candidate) return;
        this.#votes.set(m.from, !m.reject);
        this.#checkVotes(MessageType.VoteResp);
        return;
      default:
        return;
    }
  }

  #stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
        this.#send(message({
          type: MessageType.HeartbeatResp,
          from: this.id,
          to: m.from,
          term: 0,
          index: m.index,
        }));
        return;
      case MessageType.Snap:
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleSnapPiece(m);
        return;
      case MessageType.ReadIndexResp:
        if (m.context) this.#readStates.push({ index: m.index, context: m.context });
        return;
      case MessageType.TimeoutNow:
        this.#hup(true);
        return;
      default:
        return;
    }
  }

  #handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.#send(message({
        type: MessageType.AppResp,
        from: this.id,
        to: m.from,
        term: 0,
        index: this.log.committed,
      }));
      return;
    }
    const last = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    this.#configMaybeChanged();
    if (last !== null) {
      this.#send(
        message({ type: MessageType.AppResp, from: this.id, to: m.from, term: 0, index: last }),
      );
      return;
    }
    const [hintIndex, hintTerm] = this.log.findConflictByTerm(
      Math.min(m.index, this.log.lastIndex()),
      m.logTerm,
    );
    this.#send(message({
      type: MessageType.AppResp,
      from: this.id,
      to: m.from,
      term: 0,
      index: m.index,
      reject: true,
      rejectHint: hintIndex,
      logTerm: hintTerm,
    }));
  }

  #handleSnapPiece(m: Message): void {
    const piece = m.snapshot;
    if (!piece) return;
    const meta = piece.meta;
    if (meta.index <= this.log.committed) {
      // We already have all of it: tell the leader where we are.
      this.#snapRecv = null;
      this.#send(message({
        type: MessageType.AppResp,
        from: this.id,
        to: m.from,
        term: 0,
        index: this.log.committed,
      }));
      return;
    }
    let r = this.#snapRecv;
    const same = r !== null && r.term === this.#term && r.from === m.from &&
      r.snapshot.index === meta.index && r.snapshot.term === meta.term && r.size === piece.size;
    if (!same) {
      r = null;
      this.#snapRecv = null;
      if (piece.offset === 0) {
        r = {
          snapshot: meta,
          size: piece.size,
          term: this.#term,
          from: m.from,
          parts: [],
          received: 0,
        };
        this.#snapRecv = r;
      }
    }
    if (r === null) {
      this.#send(message({
        type: MessageType.SnapResp,
        from: this.id,
        to: m.from,
        term: 0,
        index: meta.index,
        rejectHint: 0,
      }));
      return;
    }
    if (piece.offset === r.received && piece.data.length > 0) {
      const room = r.size - r.received;
      const take = piece.data.length <= room ? piece.data : piece.data.subarray(0, room);
      r.parts.push(take.slice());
      r.received += take.length;
    }
    if (r.received < r.size) {
      this.#send(message({
        type: MessageType.SnapResp,
        from: this.id,
        to: m.from,
        term: 0,
        index: meta.index,
        rejectHint: r.received,
      }));
      return;
    }
    this.#snapRecv = null;
    const data = concat(r.parts, r.size);
    const snap: Snapshot = { meta: r.snapshot, data };
    if (this.log.matchTerm(meta.index, meta.term)) {
      // Our log already contains the snapshot's last entry: just fast-forward the commit.
      this.log.commitTo(meta.index);
    } else {
      this.log.restore(snap);
      this.#configMaybeChanged();
    }
    this.#send(message({
      type: MessageType.AppResp,
      from: this.id,
      to: m.from,
      term: 0,
      index: this.log.lastIndex(),
    }));
  }

  // ---- leader: replication ----------------------------------------------------------------

  #bcastAppend(): void {
    for (const [id, pr] of this.#prs) {
      if (id !== this.id) this.#sendAppend(id, pr, true);
    }
  }

  #bcastHeartbeat(): void {
    for (const [id, pr] of this.#prs) {
      if (id === this.id) continue;
      this.#send(message({
        type: MessageType.Heartbeat,
        from: this.id,
        to: id,
        term: 0,
        commit: Math.min(pr.match, this.log.committed),
        index: this.#readSeq,
      }));
      if (pr.state === "snapshot" && pr.snap && ++pr.snap.idle >= 3) {
        pr.snap.idle = 0;
        this.#sendSnapPiece(id, pr);
      }
    }
  }

  /** Send the next append to `to` if flow control allows. Returns whether one was sent. */
  #sendAppend(to: NodeId, pr: Progress, sendIfEmpty: boolean): boolean {
    if (pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) return this.#startSnapshot(to, pr);
    const ents = this.log.slice(pr.next, this.log.lastIndex() + 1, this.#maxSizePerMsg);
    if (ents.length === 0 && !sendIfEmpty) return false;
    this.#send(message({
      type: MessageType.App,
      from: this.id,
      to,
      term: 0,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
    }));
    pr.sentAppend(ents.length ? ents[ents.length - 1].index : null);
    return true;
  }

  #startSnapshot(to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false;
    const snap = this.log.snapshot;
    if (!snap) throw new RaftError("InvalidState", "log compacted without a snapshot");
    pr.becomeSnapshot(snap);
    this.#sendSnapPiece(to, pr);
    return true;
  }

  #sendSnapPiece(to: NodeId, pr: Progress): void {
    const s = pr.snap;
    if (!s) return;
    const data = s.snapshot.data;
    if (s.acked >= data.length && data.length > 0) return;
    const piece = data.subarray(s.acked, Math.min(data.length, s.acked + this.#maxPiece));
    this.#send(message({
      type: MessageType.Snap,
      from: this.id,
      to,
      term: 0,
      snapshot: { meta: s.snapshot.meta, size: data.length, offset: s.acked, data: piece },
    }));
  }

  // ---- leader: reads and transfer ---------------------------------------------------------

  #leaderReadIndex(context: Uint8Array, from: NodeId): void {
    if (this.log.term(this.log.committed) !== this.#term) {
      // Our commit index may lag the cluster's until an entry of our term commits.
      this.#readsAwaitingCommit.push({ context, from });
      return;
    }
    const seq = ++this.#readSeq;
    this.#pendingReads.push({ seq, index: this.log.committed, context, from });
    this.#releaseReads();
    if (this.#pendingReads.length) this.#bcastHeartbeat();
  }

  /** Answer every pending read whose round a quorum of voters has confirmed, in order. */
  #releaseReads(): void {
    while (this.#pendingReads.length) {
      const r = this.#pendingReads[0];
      const acked = quorumIndex(this.log.config(), (id) => {
        if (id === this.id) return this.#readSeq;
        return this.#prs.get(id)?.readAck ?? 0;
      });
      if (acked < r.seq) return;
      this.#pendingReads.shift();
      if (r.from === this.id) this.#readStates.push({ index: r.index, context: r.context });
      else {
        this.#send(message({
          type: MessageType.ReadIndexResp,
          from: this.id,
          to: r.from,
          term: 0,
          index: r.index,
          context: r.context,
        }));
      }
    }
  }

  #handleTransfer(target: NodeId): void {
    if (target === this.id || !isVoter(this.log.config(), target)) return;
    if (this.#leadTransferee === target) return;
    const pr = this.#prs.get(target);
    if (!pr) return;
    this.#leadTransferee = target;
    this.#electionElapsed = 0;
    if (pr.match === this.log.lastIndex()) {
      this.#send(message({ type: MessageType.TimeoutNow, from: this.id, to: target, term: 0 }));
    } else {
      this.#sendAppend(target, pr, true);
    }
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function concat(parts: readonly Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * The persisted state of a brand-new member of a new cluster: entry 1 installs the initial
 * voters and is committed by construction, since every founding member writes the same one.
 * Joining nodes start from {@link emptyState} instead and receive the log from the leader.
 */
export function bootstrapState(voters: readonly NodeId[]): PersistedState {
  const data = encodeConfChange({ type: "init", voters: [...voters] });
  return {
    hardState: { term: 1, vote: "", commit: 1 },
    snapshot: null,
    offset: 0,
    offsetTerm: 0,
    offsetConfig: { voters: [], learners: [] },
    entries: [{ index: 1, term: 1, type: EntryType.ConfChange, data }],
  };
}

/** The persisted state of a node that has never been part of a cluster. */
export function emptyState(): PersistedState {
  return {
    hardState: { term: 0, vote: "", commit: 0 },
    snapshot: null,
    offset: 0,
    offsetTerm: 0,
    offsetConfig: { voters: [], learners: [] },
    entries: [],
  };
}

export { entrySize };
