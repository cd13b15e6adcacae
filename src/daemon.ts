/**
 * One FileSync node, wired together: the local store, the libp2p host with its membership gate,
 * the Raft node with Deno KV storage and the replicated file index as its state machine, the
 * join, raft and object protocols, and the local control channel. This is the only module that
 * knows all the parts; each part knows only its own job.
 *
 * Membership: the first `serve` of a directory creates a cluster (id and secret) and bootstraps
 * Raft with itself as the only voter. A joiner proves an invite's secret over /filesync/join/1;
 * the admitting member adds it as a Raft learner, and the joiner promotes itself to voter once
 * it has applied everything that was committed when it was admitted. The gate lets in exactly
 * the peers in the current Raft configuration (plus joiners in their handshake).
 */
import { peerIdFromString } from "@libp2p/peer-id";
import {
  BulkDialer,
  bulkHostname,
  BulkServer,
  CLIENT_PROTOCOL,
  createHost,
  DEFAULT_LISTEN,
  type FetchOptions,
  type Host,
  joinCluster,
  JoinRefusal,
  loadOrCreateIdentity,
  makeTlsIdentity,
  type MemberInfo,
  type MessageChannel,
  ObjectFetcher,
  ObjectPusher,
  type ObjectSink,
  openMessageChannel,
  parseInvite,
  pinFreePorts,
  serveJoin,
  serveObjects,
  serveSession,
  type TlsIdentity,
} from "./net/mod.ts";
import {
  type ApplyResult,
  type Command,
  decodeSnapshot,
  encodeCommand,
  type IndexRecord,
  IndexState,
  validatePath,
} from "./fsm/mod.ts";
import { hashKey, toHex } from "./chunk/mod.ts";
import type { NodeSource } from "./merkle/mod.ts";
import { type Entry, KvRaftStorage, RaftError, RaftNode, RaftRole } from "./raft/mod.ts";
import {
  type ClusterInfo,
  DEFAULT_GC_GRACE_MS,
  HeldCheck,
  loadCluster,
  LocalStore,
  metaKey,
  newCluster,
  saveCluster,
} from "./store/mod.ts";
import {
  ChannelRaftTransport,
  ClientGateway,
  type ControlServer,
  ensureObjects,
  inviteTerms,
  Logger,
  makeInvite,
  objectsOfOps,
  type PassResult,
  planRestore,
  resolveInvite,
  resolveVersion,
  startControlServer,
  SyncEngine,
  type SyncNowResult,
} from "./sync/mod.ts";
import { cborDecode, cborEncode } from "./wire/mod.ts";
import { giveBuffer } from "./util/mod.ts";

/**
 * A push not confirmed within this long, plus PUSH_HEDGE_MS_PER_OBJECT for each object (a
 * 64 KiB chunk at 50 MiB/s), gets one more voter pushed to in parallel, ms.
 */
const PUSH_HEDGE_MS = 2_000;
const PUSH_HEDGE_MS_PER_OBJECT = 1.25;
/** Streams one push to a peer is spread over (when it has enough objects). */
const PUSH_STREAMS = 4;
/**
 * Fetches of at least this many objects (a large file's chunks, a batch of small files) ask
 * every responsive member at once; smaller ones ask the file's origin first.
 */
const SPREAD_FETCH_OBJECTS = 64;
/**
 * How long the other stripes of a file are asked of their members alone, ms, plus this per
 * object (a 64 KiB chunk at about 30 MiB/s): then the rest is asked of every member at once.
 */
const OWNERS_FIRST_MS = 2_000;
const OWNERS_FIRST_MS_PER_OBJECT = 2;
/**
 * How long a request for a chunk this node is fetching right now (its stripe of a file the
 * members fetch together) waits for it, ms. A third of the fetch stall limit (3 s): the asking
 * member must not take the wait for a stopped peer.
 */
const PARTIAL_WAIT_MS = 1_000;
/** A voter whose push failed is tried last for this long, ms. */
const PUSH_FAILURE_MEMORY_MS = 30_000;
/**
 * A learner is promoted once it holds the data committed before it joined; one that cannot get
 * there (a file it cannot write, say) is promoted anyway after this long, ms.
 */
const PROMOTE_ANYWAY_MS = 60_000;
/** Pack objects claimed to a pusher are kept from GC this long (its commit lands by then), ms. */
const CLAIM_KEEP_MS = 60 * 60_000;
/**
 * Garbage collection after pushes waits until none came for this long, ms (see
 * #collectGarbage): a run each tick while an edit streamed in surveyed the whole pack each time
 * (about 3 s with 20,000 files) and kept most of what it was run for.
 */
const PUSH_SETTLE_MS = 2_000;
/** ...but no longer than this under a steady stream of pushes, ms. */
const PUSH_WAIT_MAX_MS = 60_000;
/** A GC walk of the retained trees that could not finish is tried again after this long, ms. */
const UNREFERENCED_RETRY_MS = 10 * 60_000;
/** Most claims remembered (the oldest are forgotten first; bounds memory against floods). */
const MAX_CLAIMS = 1 << 20;
/** Longest a restore waits for a majority to hold the old bytes, ms. */
const RESTORE_BUDGET_MS = 60_000;
/** The longest a one-shot client stays admitted, however busy it keeps, ms. */
const CLIENT_ADMISSION_CAP_MS = 24 * 60 * 60_000;

/** How a node is started. */
export interface DaemonOptions {
  /** The synced directory. */
  dir: string;
  /** Multiaddrs to listen on (default: all interfaces, UDP 4001, QUIC). */
  listen?: string[];
  /** Invite of a cluster to join (only for a directory that is not yet a member). */
  join?: string;
  /** Also listen on and dial TCP. */
  enableTcp?: boolean;
  /**
   * Move objects over TLS-on-TCP bulk connections where peers offer them (bulk.ts; default
   * true); false: over libp2p streams only.
   */
  bulk?: boolean;
  logger?: Logger;
  /** Raft tick, ms (election after about 10 ticks without a leader). */
  tickMs?: number;
  /** Safety-net rescan period of the sync engine, ms. */
  rescanMs?: number;
  /** How often pack space is reclaimed when objects came in, ms (default 60,000). */
  gcIntervalMs?: number;
  /** Retention of old versions (applied cluster-wide by the leader's prune). */
  retention?: RetentionPolicy;
}

/** Which old versions the cluster keeps (the current version of every path is always kept). */
export interface RetentionPolicy {
  /** Newest versions kept per path, the current one included (default 20). */
  keepVersions: number;
  /** Versions committed within this long are kept whatever their number, ms (default 30 days). */
  keepMs: number;
  /** How often the leader proposes a prune, ms (default 10 minutes). */
  pruneIntervalMs: number;
}

/** Defaults of RetentionPolicy. */
export const DEFAULT_RETENTION: RetentionPolicy = {
  keepVersions: 20,
  keepMs: 30 * 86_400_000,
  pruneIntervalMs: 10 * 60_000,
};

/** What `filesync status` shows. */
export interface NodeStatus {
  dir: string;
  peerId: string;
  clusterId: string;
  addrs: string[];
  role: string;
  leader: string;
  term: number;
  commit: number;
  applied: number;
  members: { peerId: string; role: "voter" | "learner"; addrs: string[]; connected: boolean }[];
  connections: { peerId: string; remoteAddr: string; direction: string; streams: number }[];
  sync: {
    passes: number;
    busy: boolean;
    pendingUp: number;
    /** Bytes of the files waiting to be committed. */
    pendingUpBytes: number;
    pendingDown: number;
    /** Bytes of the committed files waiting to be written here. */
    pendingDownBytes: number;
    conflicts: number;
    /** Object bytes (chunks and tree nodes) fetched from peers since start. */
    fetchedBytes: number;
    /** Object bytes peers pushed to this node before committing their changes, since start. */
    receivedBytes: number;
    /** Object bytes this node served to members and clients, since start. */
    servedBytes: number;
    /** Why local changes wait (the last failure: no majority holds their data, ...), if so. */
    waitingUp: string | null;
    /** Why committed changes are not written here (a fetch or the disk failed), if so. */
    waitingDown: string | null;
  };
  /** Why the Raft node stopped by itself (storage failure, broken invariant), if it did. */
  raftError: string | null;
}

/**
 * Why changes wait, for status: a pass's reasons, shown only while something waits that way (a
 * pass in progress updates its counts before its reasons).
 */
function waitingReasons(p: PassResult): { waitingUp: string | null; waitingDown: string | null } {
  return {
    waitingUp: p.pendingUp > 0 ? p.waitingUp ?? null : null,
    waitingDown: p.pendingDown > 0 ? p.waitingDown ?? null : null,
  };
}

const JOIN_COMMIT_KEY = "joinCommit";
/** Meta key: the listen addresses asked for with a port 0, and the ports bound for them. */
const PINNED_LISTEN_KEY = "pinnedListen";

/** The addresses bound last time for this same request with a port 0, or null. */
async function loadPinnedListen(kv: Deno.Kv, requested: string[]): Promise<string[] | null> {
  const saved = (await kv.get<{ requested: string[]; pinned: string[] }>(
    metaKey(PINNED_LISTEN_KEY),
  )).value;
  if (!saved || JSON.stringify(saved.requested) !== JSON.stringify(requested)) return null;
  return Array.isArray(saved.pinned) ? saved.pinned : null;
}

/** Remember the ports bound for a request with a port 0 (nothing to keep otherwise). */
async function savePinnedListen(kv: Deno.Kv, requested: string[], bound: string[]) {
  const pinned = pinFreePorts(requested, bound);
  if (pinned) await kv.set(metaKey(PINNED_LISTEN_KEY), { requested, pinned });
}
const TRACE_APPLY = Deno.env.get("FILESYNC_TRACE_RAFT") === "1";
/** Check every sync pass's kept views against a whole read (tests; see plan_views.ts). */
const CHECK_VIEWS = Deno.env.get("FILESYNC_CHECK_VIEWS") === "1";

/** A running node. */
export class Daemon {
  #members = new Set<string>();
  /** Peers in a join handshake or just admitted, allowed in before the config says so. */
  #admitting = new Map<string, number>();
  #timers: ReturnType<typeof setInterval>[] = [];
  #promoting = false;
  /** When this node, a learner, first had the log it joined at (0: not yet). */
  #caughtUpAt = 0;
  #publishedAddrs = "";
  /** When each member was last dialed, to space out reconnect attempts. */
  #lastDial = new Map<string, number>();
  #stopped = false;
  #engine: SyncEngine | null = null;
  #fetcher: ObjectFetcher | null = null;
  /** Dials bulk connections for fetches and pushes; null with DaemonOptions.bulk false. */
  readonly #bulk: BulkDialer | null;
  #bulkServer: BulkServer | null = null;
  /** Rotates which voters receive an upload's objects first. */
  #pushRotation = 0;
  /** When a push to a peer last failed: such peers are tried last for a while. */
  readonly #pushFailedAt = new Map<string, number>();
  readonly #pusher: ObjectPusher;
  #fetchedBytes = 0;
  /**
   * FILESYNC_FETCH_FROM=origin: fetch every file from its origin (others only for what it
   * lacks), as before members fetched from each other; for bench:uplink's comparison.
   */
  readonly #originOnly = Deno.env.get("FILESYNC_FETCH_FROM") === "origin";
  #servedBytes = 0;
  /** Object bytes peers pushed to this node. */
  #receivedBytes = 0;
  /** Bytes pushed to this node when garbage was last collected. */
  #receivedAtGc = 0;
  #collecting = false;
  /** When the last object was pushed here, and the first one no collection has seen yet. */
  #lastPushAt = 0;
  #pushesWaitingSince = 0;
  readonly #heldCheck = new HeldCheck();
  #gcIntervalMs = 60_000;
  /** Pack objects a pusher was told we hold, and when: GC keeps them for CLAIM_KEEP_MS. */
  readonly #claimed = new Map<string, number>();
  /**
   * When garbage collection runs the unreferenced rule next, ms since the epoch (Infinity:
   * nothing calls for it). A prune, a restore or an installed snapshot make it due at once;
   * pushes a grace period later (see #collectGarbage).
   */
  #unreferencedDueAt = Infinity;
  /** Counts the calls of #collectUnreferencedSoon (one during a run makes it run again). */
  #unreferencedAsked = 0;
  #retention: RetentionPolicy = DEFAULT_RETENTION;

  private constructor(
    readonly store: LocalStore,
    readonly host: Host,
    readonly raft: RaftNode,
    readonly index: IndexState,
    readonly cluster: ClusterInfo,
    private readonly channel: MessageChannel,
    private readonly control: ControlServer,
    readonly log: Logger,
    bulk: BulkDialer | null,
  ) {
    this.#bulk = bulk;
    this.#pusher = new ObjectPusher(host, { bulk: bulk ?? undefined });
  }

  /** Open the directory, join or create the cluster, and start serving. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const log = opts.logger ?? new Logger();
    // The bulk listener's certificate (a key, a signature, and the x509 package to load):
    // made while the store opens and the host starts, instead of after them.
    const tlsIdentity = (opts.bulk ?? true) ? makeTlsIdentity() : null;
    tlsIdentity?.catch(() => {}); // awaited where the listener starts
    const store = await LocalStore.open(opts.dir);
    const cleanups: (() => Promise<unknown> | unknown)[] = [() => store.close()];
    try {
      const existing = await loadCluster(store.kv);
      if (existing && opts.join) {
        throw new Error(
          `${store.root} is already a member of cluster ${existing.clusterId}; run serve without --join`,
        );
      }
      // The gate consults the daemon's member set, which exists only once the daemon does;
      // until then it admits the peers in `early` (the invite's server, during a join).
      const ref: { daemon: Daemon | null } = { daemon: null };
      const early = new Set<string>();
      const identity = await loadOrCreateIdentity(`${store.dataDir}/identity.key`);
      const requested = opts.listen ?? DEFAULT_LISTEN;
      const hostOn = (listen: string[]) =>
        createHost({
          identityPath: `${store.dataDir}/identity.key`,
          listen,
          enableTcp: opts.enableTcp,
          isAllowedPeer: (peer) => ref.daemon ? ref.daemon.#allowed(peer) : early.has(peer),
          logger: log.asNetLogger(),
        });
      // Asked for any free port: the one bound last time, if it is still free (see
      // listen_ports.ts), so the address the other members know stays right.
      const pinned = await loadPinnedListen(store.kv, requested);
      const host = pinned
        ? await hostOn(pinned).catch(() => hostOn(requested))
        : await hostOn(requested);
      cleanups.push(() => host.stop());
      await savePinnedListen(store.kv, requested, host.addrs());
      if (host.peerId !== identity.peerId) throw new Error("identity mismatch");

      let cluster = existing;
      let bootstrap: string[] | undefined;
      let joinedMembers: MemberInfo[] = [];
      if (!cluster && opts.join) {
        const invite = parseInvite(opts.join);
        const result = await joinCluster(host, invite);
        const data = cborDecode(result.data) as [string, Uint8Array, number];
        if (!Array.isArray(data) || data[0] !== invite.clusterId) {
          throw new Error("the admitting member sent no valid cluster record");
        }
        cluster = { clusterId: data[0], secret: new Uint8Array(data[1]), createdAt: Date.now() };
        await store.kv.set(metaKey(JOIN_COMMIT_KEY), data[2]);
        joinedMembers = result.members;
        for (const m of joinedMembers) early.add(m.peerId);
        log.info("joined", { cluster: cluster.clusterId, via: result.serverPeer });
      } else if (!cluster) {
        cluster = newCluster();
        bootstrap = [host.peerId];
        log.info("cluster created", { cluster: cluster.clusterId });
      }
      await saveCluster(store.kv, cluster);

      const index = new IndexState(store.kv, ["fsm"]);
      const transport = new ChannelRaftTransport(log.asNetLogger());
      const channel = await openMessageChannel(
        host,
        (from, batch) => transport.deliver(from, batch),
      );
      transport.attach(channel);
      cleanups.push(() => channel.close());
      const raft = await RaftNode.start({
        id: host.peerId,
        storage: new KvRaftStorage(store.kv, ["raft"]),
        transport,
        bootstrap,
        tickMs: opts.tickMs ?? 100,
        // Callers retry (the sync engine re-plans, promotion re-proposes): a short wait keeps
        // a dropped forwarded proposal from stalling them for long.
        requestTimeoutMs: 5_000,
        stateMachine: {
          apply: async (e: Entry) => {
            if (TRACE_APPLY) log.debug("apply", { index: e.index });
            const r = await index.apply(e.index, e.data);
            if (TRACE_APPLY) log.debug("applied", { index: e.index, ok: r.ok });
            // A newly committed change: let the sync engine bring the disk up to date.
            if (r.ok) ref.daemon?.requestSync();
            if (r.ok && (r.pruned ?? 0) > 0 && ref.daemon) ref.daemon.#collectUnreferencedSoon();
            return r;
          },
          snapshot: () => index.snapshot(),
          async restore(data: Uint8Array) {
            // After a restart Raft hands back its last snapshot; the index in KV is already at
            // or past it, so restoring would only throw work away.
            if ((await index.applied()) >= decodeSnapshot(data).applied) return;
            await index.restore(data);
            // The prunes it stands for were never applied here: their garbage is collected now.
            if (ref.daemon) ref.daemon.#collectUnreferencedSoon();
          },
        },
      });
      cleanups.push(() => raft.stop());
      // A restarted member knows its peers from the stored configuration: admit them at once,
      // not only once the daemon exists (their connections were refused until then).
      const { voters, learners } = raft.status().config;
      for (const p of [...voters, ...learners]) early.add(p);
      // The only voter (a new cluster's first node, or a restarted one-node cluster) cannot lose
      // an election: campaign now rather than after a 1-2 s election timeout, during which its
      // first scan's uploads and any join would wait.
      if (voters.length === 1 && voters[0] === host.peerId) raft.campaign();

      const control = await startControlServer(store.dataDir, {
        status: () => ref.daemon!.status(),
        invite: (o) => Promise.resolve({ invite: ref.daemon!.invite(o) }),
        removeMember: (peerId) => ref.daemon!.removeMember(peerId),
        sync: () => ref.daemon!.syncNow(),
        history: (path) => ref.daemon!.history(path),
        restore: (path, at) => ref.daemon!.restore(path, at),
        label: (name) => ref.daemon!.label(name),
        labels: () => ref.daemon!.index.labels(),
      });
      cleanups.push(() => control.close());
      const bulk = (opts.bulk ?? true) ? new BulkDialer(host) : null;
      const self = new Daemon(store, host, raft, index, cluster, channel, control, log, bulk);
      for (const m of joinedMembers) self.#members.add(m.peerId);
      // Before the engine starts: its first pushes need the members (the gate asks this set).
      self.#refreshMembers();
      ref.daemon = self;
      cleanups.push(() => self.#bulkServer?.close());
      await self.#serveProtocols(tlsIdentity);
      self.#gcIntervalMs = opts.gcIntervalMs ?? 60_000;
      self.#retention = { ...DEFAULT_RETENTION, ...opts.retention };
      self.#startBackgroundTasks();
      // Before the engine's first pushes: a restarted node's host knows no address yet.
      await self.#learnAddresses();
      self.#startEngine(opts.rescanMs);
      log.info("serving", {
        dir: store.root,
        peer: host.peerId,
        addrs: host.addrs().join(","),
      });
      return self;
    } catch (e) {
      for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => {});
      throw e;
    }
  }

  /** Gate decision: a member, or a peer being admitted right now. */
  #allowed(peer: string): boolean {
    if (this.#members.has(peer)) return true;
    const until = this.#admitting.get(peer);
    return until !== undefined && until > Date.now();
  }

  async #serveProtocols(tlsIdentity: Promise<TlsIdentity> | null): Promise<void> {
    await serveJoin(this.host, {
      clusterId: this.cluster.clusterId,
      resolveInvite: (id) => resolveInvite(this.cluster.secret, id),
      admit: (req) => this.#admit(req.peerId, req.inviteId, req.remoteAddr),
    });
    // One-shot clients (filesync push/pull): the same invite proof, but admitted as clients
    // for a while (objects and session protocols only), never as members.
    await serveJoin(this.host, {
      protocol: CLIENT_PROTOCOL,
      clusterId: this.cluster.clusterId,
      resolveInvite: (id) => resolveInvite(this.cluster.secret, id),
      admit: (req) => this.#admitClient(req.peerId, req.inviteId, req.remoteAddr),
    });
    const gateway = new ClientGateway({
      index: this.index,
      store: this.store,
      readBarrier: () => this.raft.readBarrier(),
      replicate: (hashes, signal) => this.#replicate(hashes, signal),
      propose: (c) => this.propose(c),
      log: this.log,
    });
    await serveSession(this.host, (peer, method, body) => gateway.handle(peer, method, body));
    const objectsHandler = await serveObjects(this.host, {
      has: async (h) => {
        if (!(await this.store.holds(h))) return false;
        // A pusher skips what we claim to hold: GC keeps it until its commit can have landed.
        const key = hashKey(h);
        this.#claimed.delete(key); // re-inserted last, so the map stays in time order
        this.#claimed.set(key, Date.now());
        if (this.#claimed.size > MAX_CLAIMS) {
          this.#claimed.delete(this.#claimed.keys().next().value!);
        }
        return true;
      },
      get: async (h) => {
        // Else a chunk of a large file still being written here (see partial_chunks.ts).
        const bytes = await this.store.readObject(h) ?? await this.#partialChunk(h);
        if (bytes !== null) this.#servedBytes += bytes.length;
        return bytes;
      },
      // Chunks read through the locator come from the buffer pool; the rest are ignored.
      release: giveBuffer,
    }, {
      // Objects pushed before a commit: kept in the packs (put copies the bytes, which may
      // share a receive buffer; the server verified them already).
      receiver: {
        store: (h, bytes) => {
          this.#receivedBytes += bytes.length;
          this.#lastPushAt = Date.now();
          if (this.#pushesWaitingSince === 0) this.#pushesWaitingSince = this.#lastPushAt;
          return Promise.resolve(this.store.packs.put(h, bytes));
        },
        flush: (hashes) => this.store.packs.flush(hashes),
      },
    });
    if (this.#bulk !== null) {
      const server = await BulkServer.start(
        this.host,
        bulkHostname(this.host.addrs()),
        objectsHandler,
        await (tlsIdentity ?? makeTlsIdentity()),
      );
      this.#bulkServer = server;
    }
  }

  /** Admit a one-shot client that proved an invite: it may use objects and sessions. */
  async #admitClient(peerId: string, inviteId: string, ip: string) {
    if (this.#members.has(peerId)) throw new JoinRefusal("a member cannot be a client too");
    const terms = inviteTerms(inviteId);
    if (terms?.once) {
      throw new JoinRefusal("a single-use invite admits one node; use a reusable invite");
    }
    // Renewed while the client works, never past its invite's expiry nor a day.
    const cap = Math.min(terms?.expiresAt ?? Infinity, Date.now() + CLIENT_ADMISSION_CAP_MS);
    if (!this.host.gate.admitClient(peerId, ip, cap)) {
      throw new JoinRefusal("too many clients at once; try again later");
    }
    this.log.info("client admitted", { client: peerId });
    return { members: await this.#memberInfos() };
  }

  /** Every member (voters, then learners) with the addresses it can be reached at. */
  async #memberInfos(): Promise<MemberInfo[]> {
    const book = await this.index.peers();
    const { voters, learners } = this.raft.status().config;
    return [...voters, ...learners].map((id) => ({
      peerId: id,
      addrs: id === this.host.peerId ? this.host.addrs() : book.get(id) ?? [],
    }));
  }

  /** Fetch objects from the other members; resolves to the hashes none of them gave. */
  async #fetchFromPeers(
    hashes: Uint8Array[],
    deliver: (hash: Uint8Array, bytes: Uint8Array) => void,
  ): Promise<Uint8Array[]> {
    const peers = [...this.#members].filter((p) => p !== this.host.peerId);
    if (peers.length === 0 || !this.#fetcher) return hashes;
    const opts = { stallMs: 3_000, maxPeerFailures: 1 };
    return (await this.#fetcher.fetch(hashes, peers, deliver, opts)).missing;
  }

  /**
   * Push `hashes` to enough voters that, with this node, a majority of voters holds them
   * durably (DESIGN, write path step 4); rejects if that many cannot confirm. Pushes start to
   * `needed` voters (those that failed a push lately last, the rest in rotating order so
   * successive uploads spread over the peers); each failure, and every hedge interval without
   * enough confirmations, starts one more (a killed peer can look connected for a while and
   * answer nothing). Once enough confirmed, the pushes still running are cancelled.
   */
  /** Other voters that must hold an object before it is committed (0: this node suffices). */
  #replicasNeeded(): number {
    const { voters } = this.raft.status().config;
    const self = this.host.peerId;
    return Math.floor(voters.length / 2) + 1 - (voters.includes(self) ? 1 : 0);
  }

  async #replicate(hashes: Uint8Array[], signal?: AbortSignal): Promise<void> {
    const { voters } = this.raft.status().config;
    const self = this.host.peerId;
    const needed = this.#replicasNeeded();
    if (needed <= 0) return;
    const now = Date.now();
    const failedLately = (p: string) =>
      now - (this.#pushFailedAt.get(p) ?? 0) < PUSH_FAILURE_MEMORY_MS;
    const others = voters.filter((p) => p !== self);
    const start = this.#pushRotation++ % Math.max(1, others.length);
    const rotated = [...others.slice(start), ...others.slice(0, start)];
    const order = [...rotated.filter((p) => !failedLately(p)), ...rotated.filter(failedLately)];
    if (order.length < needed) {
      throw new Error(`data not durable on a majority: ${order.length} other voters`);
    }
    const read = async (h: Uint8Array) => {
      const bytes = await this.store.readObject(h);
      if (bytes === null) throw new Error("object is no longer held here");
      return bytes;
    };
    const cancel = new AbortController();
    let hedge: ReturnType<typeof setInterval> | undefined;
    let rejectOnAbort = (_: unknown) => {};
    const onAbort = () => {
      cancel.abort(signal?.reason);
      rejectOnAbort(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        rejectOnAbort = reject;
        let next = 0;
        let running = 0;
        let confirmed = 0;
        const errors: string[] = [];
        const launch = () => {
          if (next >= order.length) return;
          const peer = order[next++];
          running++;
          this.#pushParallel(peer, hashes, read, cancel.signal).then(() => {
            this.#pushFailedAt.delete(peer);
            if (++confirmed === needed) resolve();
          }, (e: Error) => {
            if (cancel.signal.aborted) return;
            this.#pushFailedAt.set(peer, Date.now());
            errors.push(e.message);
            launch();
          }).finally(() => {
            running--;
            if (running === 0 && next >= order.length && confirmed < needed) {
              reject(
                new Error(
                  `data not durable on a majority (${confirmed} of ${needed} peers confirmed): ${
                    errors.join("; ")
                  }`,
                ),
              );
            }
          });
        };
        for (let i = 0; i < needed; i++) launch();
        hedge = setInterval(launch, PUSH_HEDGE_MS + hashes.length * PUSH_HEDGE_MS_PER_OBJECT);
      });
    } finally {
      signal?.removeEventListener("abort", onAbort);
      clearInterval(hedge);
      cancel.abort(new Error("enough peers hold the data"));
    }
  }

  /**
   * Push to one peer over several streams at once: one push keeps at most a few MiB
   * unanswered (the transport cannot hold a sender back), so a single stream is bound by the
   * round trip through both event loops, not by bandwidth. Each part is confirmed durable on
   * its own; the push is done when all are.
   */
  async #pushParallel(
    peer: string,
    hashes: Uint8Array[],
    read: (h: Uint8Array) => Promise<Uint8Array>,
    signal: AbortSignal,
  ): Promise<void> {
    const parts = Math.max(1, Math.min(PUSH_STREAMS, Math.floor(hashes.length / 64)));
    const size = Math.ceil(hashes.length / parts);
    const slices: Uint8Array[][] = [];
    for (let i = 0; i < hashes.length; i += size) slices.push(hashes.slice(i, i + size));
    await Promise.all(slices.map((part) => this.#pusher.push(peer, part, read, { signal })));
  }

  /**
   * Tree nodes from the packs, else fetched from peers into the packs: retained versions this
   * node never materialized are still walked whole by GC (see GcOptions.nodes).
   */
  #nodesFromPeers(): NodeSource {
    return {
      getNode: async (hash) => {
        if (await this.store.packs.has(hash)) return await this.store.packs.get(hash);
        let got: Uint8Array | null = null;
        await this.#fetchFromPeers([hash], (h, bytes) => {
          this.store.packs.put(h, bytes);
          got = bytes;
        });
        if (got === null) throw new Error(`tree node ${toHex(hash)} is held by no reachable peer`);
        return got;
      },
    };
  }

  /** Whether a pusher was told lately that we hold this object (forgets old claims). */
  #claimedLately(hash: Uint8Array): boolean {
    const now = Date.now();
    for (const [k, at] of this.#claimed) {
      if (now - at < CLAIM_KEEP_MS) break; // insertion order: the rest are newer
      this.#claimed.delete(k);
    }
    return this.#claimed.has(hashKey(hash));
  }

  /** Schedule a sync pass after a commit: the index changed, the tree need not be rescanned. */
  requestSync(): void {
    this.#engine?.request({ scan: false });
  }

  /**
   * Reclaim pack space held by objects that files now hold (pushed chunks, once written into
   * their files, are duplicates) or that nothing needs any more. Runs on a timer, one at a
   * time, and only when something may have become garbage since the last run: chunks were
   * pushed here, history was pruned, or a restore fetched old chunks into the packs. (Fetched
   * objects are not a reason: chunks go into their files, and tree nodes stay needed. Counting
   * them, a node that had fetched a tree of 20,000 small files spent 8.8 s on a run that found
   * nothing, and ran again after every later fetch.)
   */
  /** Something may have left garbage only the unreferenced rule finds: run it at the next tick. */
  #collectUnreferencedSoon(): void {
    this.#unreferencedAsked++;
    this.#unreferencedDueAt = 0;
  }

  async #collectGarbage(): Promise<void> {
    const received = this.#receivedBytes;
    const pass = this.#engine?.lastPass;
    if (this.#collecting || pass?.busy) return;
    const now = Date.now();
    const pushed = received !== this.#receivedAtGc;
    // The unreferenced rule walks every retained version's tree (5 of 8 s with 20,000 files),
    // so pushes alone do not run it. Pushed objects that were never committed are garbage only
    // by that rule, and only once older than the grace period: the first push since it last
    // ran makes it due a grace period later (each push's leftovers go within two).
    if (pushed && this.#unreferencedDueAt === Infinity) {
      this.#unreferencedDueAt = now + DEFAULT_GC_GRACE_MS;
    }
    const unreferenced = now >= this.#unreferencedDueAt;
    // Pushes still arriving: their commits and files are likely on their way, and a run now
    // would keep their chunks (not in files yet) and survey the whole pack for little. Wait
    // until they pause, or PUSH_WAIT_MAX_MS at most under a steady stream.
    const pushesSettled = now - this.#lastPushAt >= PUSH_SETTLE_MS ||
      now - this.#pushesWaitingSince >= PUSH_WAIT_MAX_MS;
    const pushedRun = pushed && pushesSettled;
    // A run between a push and the write of its file (a commit slower than the pause) kept the
    // pushed chunks: look again once the engine has written files since (HeldCheck).
    if (!pushedRun && !unreferenced && !this.#heldCheck.due(now, pass)) return;
    const started = performance.now();
    const asked = this.#unreferencedAsked;
    this.#collecting = true;
    try {
      const stats = await this.store.collectGarbage({
        retainedRoots: unreferenced ? () => this.index.retainedRoots() : undefined,
        onSkip: (reason) => this.log.debug("gc: unreferenced objects kept", { reason }),
        keep: (hash) => this.#claimedLately(hash),
        nodes: this.#nodesFromPeers(),
      });
      if (pushedRun) {
        this.#receivedAtGc = received;
        this.#pushesWaitingSince = 0;
      }
      this.#heldCheck.ran(now, pass?.writes ?? 0, pushedRun);
      if (unreferenced) {
        // A walk that could not finish (a peer holding some retained nodes is away) collected
        // nothing by that rule: it is tried again a while later.
        this.#unreferencedDueAt = stats.unreferencedSkipped === null
          ? (asked === this.#unreferencedAsked ? Infinity : 0)
          : Date.now() + UNREFERENCED_RETRY_MS;
      }
      this.log.debug("gc pass", {
        ms: Math.round(performance.now() - started),
        unreferenced,
        objects: stats.objectsDropped,
        bytes: stats.bytesReclaimed,
      });
      if (stats.bytesReclaimed > 0 || stats.corrupt.length > 0) {
        this.log.info("packs compacted", {
          packs: stats.packsRewritten,
          objects: stats.objectsDropped,
          held: stats.droppedHeld,
          unreferenced: stats.droppedUnreferenced,
          bytes: stats.bytesReclaimed,
          corrupt: stats.corrupt.length,
        });
      }
    } catch (e) {
      if (unreferenced) this.#unreferencedDueAt = Date.now() + UNREFERENCED_RETRY_MS;
      if (!this.#stopped) {
        this.log.warn("garbage collection failed", { error: (e as Error).message });
      }
    } finally {
      this.#collecting = false;
    }
  }

  /** Fetch from the `first` members, then from the others what they lacked. */
  async #fetchOriginFirst(
    hashes: Uint8Array[],
    first: string[],
    onObject: ObjectSink,
    opts: FetchOptions,
  ): Promise<Uint8Array[]> {
    const fetcher = this.#fetcher!;
    const others = this.#responsiveOthers(first);
    let missing = hashes;
    if (first.length > 0) missing = (await fetcher.fetch(missing, first, onObject, opts)).missing;
    if (missing.length > 0 && others.length > 0) {
      missing = (await fetcher.fetch(missing, others, onObject, opts)).missing;
    }
    return missing;
  }

  /**
   * Members other than this node and `except`; those that stopped answering lately only if no
   * other is left (they may be back).
   */
  #responsiveOthers(except: string[]): string[] {
    const all = this.#otherMembers(except);
    const answering = all.filter((p) => !this.#fetcher!.isUnresponsive(p));
    return answering.length > 0 ? answering : all;
  }

  /**
   * A chunk of a file still being written here (see partial_chunks.ts); if it is one this node
   * is fetching right now, after waiting a little for it.
   */
  async #partialChunk(hash: Uint8Array): Promise<Uint8Array | null> {
    const partial = this.#engine?.partialChunks;
    if (!partial) return null;
    const bytes = await partial.read(hash);
    if (bytes !== null || !(await partial.waitFor(hash, PARTIAL_WAIT_MS))) return bytes;
    return await partial.read(hash);
  }

  /** Members other than this node and `except`. */
  #otherMembers(except: string[]): string[] {
    return [...this.#members].filter((p) => p !== this.host.peerId && !except.includes(p));
  }

  /**
   * The other stripes of a file several members fetch (see partial_chunks.ts): from the members
   * fetching them, for a while, then whatever is left from every member at once (the origin
   * included). The time limit keeps a member that answers, but slowly (a thin link), from
   * holding this node's copy to its pace.
   */
  async #fetchFromOwners(
    hashes: Uint8Array[],
    owners: string[],
    onObject: ObjectSink,
    opts: FetchOptions,
  ): Promise<Uint8Array[]> {
    const fetcher = this.#fetcher!;
    const got = new Set<string>();
    const limit = new AbortController();
    const timer = setTimeout(
      () => limit.abort(new Error("owners too slow")),
      OWNERS_FIRST_MS + hashes.length * OWNERS_FIRST_MS_PER_OBJECT,
    );
    let missing: Uint8Array[] = [];
    try {
      missing = (await fetcher.fetch(hashes, owners, (h, b) => {
        got.add(hashKey(h));
        return onObject(h, b);
      }, {
        ...opts,
        signal: opts.signal ? AbortSignal.any([opts.signal, limit.signal]) : limit.signal,
      }))
        .missing;
    } catch (e) {
      if (!limit.signal.aborted) throw e;
      missing = hashes.filter((h) => !got.has(hashKey(h)));
    } finally {
      clearTimeout(timer);
    }
    if (missing.length === 0) return missing;
    const rest = [...owners, ...this.#responsiveOthers(owners)];
    return (await fetcher.fetch(missing, rest, onObject, opts)).missing;
  }

  #startEngine(rescanMs?: number): void {
    const fetcher = new ObjectFetcher(this.host, {
      bulk: this.#bulk ?? undefined,
    });
    this.#fetcher = fetcher;
    this.#engine = new SyncEngine({
      store: this.store,
      index: this.index,
      propose: (c) => this.propose(c),
      nodeId: this.host.peerId,
      log: this.log,
      replicate: (hashes) => this.#replicate(hashes),
      replicationNeeded: () => this.#replicasNeeded() > 0,
      // No stripes either when fetching from the origin only (see #originOnly).
      members: this.#originOnly ? undefined : () => [...this.#members],
      remote: {
        fetch: async (hashes, deliver, preferred = [], strictly = false, signal) => {
          const onObject = (hash: Uint8Array, bytes: Uint8Array) => {
            this.#fetchedBytes += bytes.length;
            return deliver(hash, bytes);
          };
          // A short stall limit: a peer that is stopped or cut off keeps its connection for a
          // while but answers nothing, and must not hold a file up for long.
          const opts = { stallMs: 3_000, maxPeerFailures: 1, signal };
          // Preferred members that stopped answering are not waited for when others remain.
          const origin = preferred.filter((p) =>
            this.#members.has(p) && !(strictly && fetcher.isUnresponsive(p))
          );
          const others = this.#otherMembers(origin).filter((p) => !fetcher.isUnresponsive(p));
          // A large fetch asks the origin and every other member that answers at once, from
          // one queue: whoever answers fastest serves most, and a member without an object says
          // so and is not asked for it again. With three or more members, those catching up
          // fetch from each other too (even parts of files still arriving, see
          // partial_chunks.ts), not each all of it from the one that wrote it. A small fetch
          // asks the origin first: a member that stopped answering would hold it up for the
          // stall limit, which is most of such a fetch's time.
          const spread = !strictly && hashes.length >= SPREAD_FETCH_OBJECTS &&
            origin.length > 0 && others.length > 0 && !this.#originOnly;
          if (spread) {
            return {
              missing:
                (await fetcher.fetch(hashes, [...origin, ...others], onObject, opts)).missing,
            };
          }
          if (strictly && origin.length > 0) {
            return { missing: await this.#fetchFromOwners(hashes, origin, onObject, opts) };
          }
          return { missing: await this.#fetchOriginFirst(hashes, origin, onObject, opts) };
        },
      },
    }, { rescanMs, checkViews: CHECK_VIEWS });
    this.#engine.start().catch((e) =>
      this.log.error("sync engine failed to start", { error: (e as Error).message })
    );
  }

  /**
   * Run a sync pass now and report whether the directory matches the committed index: no
   * local change waiting to be committed, no committed entry waiting to be written, and this
   * node's state machine caught up with the leader's commit (read-your-writes for scripts).
   */
  async syncNow(): Promise<SyncNowResult> {
    try {
      await this.raft.readBarrier();
    } catch (e) {
      // A barrier that timed out or was dropped: no majority answered. Other failures (Raft
      // stopped by a storage error, say) are reported as they are.
      const noQuorum = e instanceof RaftError &&
        (e.code === "Timeout" || e.code === "ProposalDropped");
      if (!noQuorum) throw e;
      throw new Error(`no quorum: a majority of voters did not answer (${e.message})`);
    }
    const r = await this.#engine!.syncNow();
    return {
      inSync: r.pendingUp === 0 && r.pendingDown === 0 && r.conflicts === 0 && r.uploaded === 0,
      pendingUp: r.pendingUp,
      pendingDown: r.pendingDown,
      ...waitingReasons(r),
    };
  }

  /** Admit an authenticated joiner: consume a single-use invite, add it as a learner. */
  async #admit(peerId: string, inviteId: string, remoteAddr: string) {
    this.#admitting.set(peerId, Date.now() + 60_000);
    const terms = inviteTerms(inviteId);
    const config = this.raft.status().config;
    if (config.voters.includes(peerId) || config.learners.includes(peerId)) {
      this.log.info("rejoin", { peer: peerId });
    } else {
      // A member that just joined is still promoting itself; a second membership change sent
      // meanwhile would be dropped by the leader, so wait for the first to settle.
      const settleBy = Date.now() + 8_000;
      while (Date.now() < settleBy) {
        const st = this.raft.status();
        if (st.lead !== "" && !st.config.learners.includes(this.host.peerId)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const ops: Command["ops"] = [{ op: "peer", peerId, addrs: [remoteAddr] }];
      if (terms?.once) ops.unshift({ op: "use-invite", inviteId });
      const r = await this.propose({ origin: this.host.peerId, ops });
      if (!r.ok) throw new JoinRefusal(r.message);
      await this.raft.proposeConfChange({ type: "addLearner", node: peerId });
      this.log.info("member added", { peer: peerId, role: "learner" });
    }
    this.#refreshMembers();
    const members = await this.#memberInfos();
    const commit = this.raft.status().committed;
    return {
      members,
      data: cborEncode([this.cluster.clusterId, this.cluster.secret, commit]),
    };
  }

  /** Propose a file index command and wait for its result on this node. */
  async propose(command: Command): Promise<ApplyResult> {
    return await this.raft.propose(encodeCommand(command)) as ApplyResult;
  }

  #startBackgroundTasks(): void {
    this.#timers.push(setInterval(() => this.#refreshMembers(), 200));
    this.#timers.push(setInterval(() => {
      this.#maintainMembership().catch((e) =>
        this.log.debug("membership upkeep failed", { error: (e as Error).message })
      );
    }, 500));
    this.#timers.push(setInterval(() => this.#collectGarbage(), this.#gcIntervalMs));
    this.#timers.push(setInterval(() => this.#prune(), this.#retention.pruneIntervalMs));
  }

  /**
   * Drop old versions the retention policy no longer keeps: the leader proposes one prune op
   * (its clock and policy go into the op, so every node drops exactly the same versions).
   */
  async #prune(): Promise<void> {
    if (this.#stopped || this.raft.status().role !== RaftRole.Leader) return;
    const { keepVersions, keepMs } = this.#retention;
    try {
      const r = await this.propose({
        origin: this.host.peerId,
        ops: [{ op: "prune", keepVersions, keepMs, now: Date.now() }],
      });
      if (r.ok && (r.pruned ?? 0) > 0) this.log.info("old versions pruned", { versions: r.pruned });
    } catch (e) {
      this.log.debug("prune not committed", { error: (e as Error).message });
    }
  }

  /** Every retained version of `path`, newest first, for `filesync log`. */
  async history(path: string) {
    const versions = await this.index.history(validatePath(path));
    const labels = await this.index.labels();
    return versions.map((r) => ({
      version: r.version,
      time: r.committedAt ? new Date(r.committedAt).toISOString() : null,
      kind: r.kind,
      deleted: r.deleted,
      size: r.size,
      mode: r.mode,
      mtime: r.mtime,
      root: toHex(r.root),
      ...(r.kind === "symlink" ? { target: r.target } : {}),
      origin: r.origin,
      labels: labels.filter((l) => labelSees(l.version, r, versions)).map((l) => l.name),
    }));
  }

  /** Name the current committed version cluster-wide (a snapshot label). */
  async label(name: string): Promise<{ name: string; version: number }> {
    const r = await this.propose({
      origin: this.host.peerId,
      ops: [{ op: "label", name, version: 0 }],
      time: Date.now(),
    });
    if (!r.ok) throw new Error(r.message);
    // Version 0 names the state just before the label's own entry.
    return { name, version: r.version - 1 };
  }

  /**
   * Commit `path` (file, symlink or directory tree) as it was at `at` (a version, label or
   * time) as a new version: old objects are fetched here if needed, made durable on a
   * majority, then proposed like any edit.
   */
  async restore(
    path: string,
    at: string,
  ): Promise<{ path: string; from: number; version: number; ops: number }> {
    validatePath(path);
    const from = await resolveVersion(this.index, at, () => this.raft.readBarrier());
    const ops = await planRestore(this.index, path, from);
    if (ops.length === 0) return { path, from, version: await this.index.applied(), ops: 0 };
    const roots = ops.flatMap((o) => o.op === "put" && o.kind === "file" ? [o.root] : []);
    await ensureObjects(
      this.store,
      roots,
      (hashes, deliver) => this.#fetchFromPeers(hashes, deliver),
    );
    const objects = await objectsOfOps(ops, this.store.packs);
    // Bounded, so the caller (filesync restore) hears a clear failure rather than nothing.
    if (objects.length > 0) {
      await this.#replicate(objects, AbortSignal.timeout(RESTORE_BUDGET_MS)).catch((e) => {
        throw new Error(`the old bytes are not durable on a majority: ${(e as Error).message}`);
      });
    }
    // Its content comes from history, not from this node's disk (see pending_proposals.ts).
    await this.#engine?.forgetPending(ops);
    const r = await this.propose({ origin: this.host.peerId, ops, time: Date.now() });
    // Whatever the outcome, the fetched chunks are duplicates once the restored files are
    // written, or garbage if nothing commits them. Applying the entry asked for a sync pass
    // already, and GC waits while the engine is busy, so it runs after the files are written.
    this.#collectUnreferencedSoon();
    if (!r.ok) throw new Error(`${r.path}: ${r.message}`);
    this.log.info("restored", { path, from, version: r.version, ops: ops.length });
    return { path, from, version: r.version, ops: ops.length };
  }

  /** Track the Raft configuration; close connections of peers that left it. */
  #refreshMembers(): void {
    if (this.#stopped) return;
    const { voters, learners } = this.raft.status().config;
    const next = new Set([...voters, ...learners]);
    if (next.size === 0) return; // a joiner before its first entries: keep the invite's members
    const changed = next.size !== this.#members.size ||
      [...next].some((p) => !this.#members.has(p));
    if (!changed) return;
    const removed = [...this.#members].filter((p) => !next.has(p));
    this.#members = next;
    for (const p of next) this.#admitting.delete(p);
    if (removed.length > 0) this.host.revalidate().catch(() => {});
  }

  /** Give the host every member's addresses from the replicated address book; returns it. */
  async #learnAddresses(): Promise<Map<string, string[]>> {
    const book = await this.index.peers();
    for (const [peer, addrs] of book) {
      if (peer !== this.host.peerId && addrs.length > 0) {
        await this.host.rememberPeer(peer, addrs).catch(() => {});
      }
    }
    return book;
  }

  /** Publish our addresses, learn others', and promote ourselves once caught up. */
  async #maintainMembership(): Promise<void> {
    if (this.#stopped) return;
    const st = this.raft.status();
    // Addresses first (a restarted node knows its peers only from its replicated address
    // book), then connections, so a node whose own address changed can reach the others.
    const book = await this.#learnAddresses();
    const configured = [...st.config.voters, ...st.config.learners];
    await this.#connectMembers(configured.length > 0 ? configured : [...this.#members]);
    if (st.lead === "") return;
    const mine = this.host.addrs();
    const published = JSON.stringify(book.get(this.host.peerId) ?? []);
    if (published !== JSON.stringify(mine) && this.#publishedAddrs !== JSON.stringify(mine)) {
      this.#publishedAddrs = JSON.stringify(mine);
      await this.propose({
        origin: this.host.peerId,
        ops: [{ op: "peer", peerId: this.host.peerId, addrs: mine }],
      }).catch(() => this.#publishedAddrs = "");
    }
    if (st.config.learners.includes(this.host.peerId) && !this.#promoting) {
      const needed = (await this.store.kv.get<number>(metaKey(JOIN_COMMIT_KEY))).value ?? 0;
      if (st.applied >= needed && this.#caughtUpAt === 0) this.#caughtUpAt = Date.now();
      // A voter is one of the majority every commit's objects must reach first. A node that
      // became one before it held the existing data would make the leader push it everything
      // committed meanwhile into its packs, and then copy it all again into files: it fetches
      // the data as a learner first. That is judged by the index the last pass planned from,
      // not by when it ran: once caught up, the next pass may be a safety-net rescan a minute
      // or more away (its spacing grows with its cost, which a loaded machine inflates).
      const pass = this.#engine?.lastPass;
      const holdsData = pass !== undefined && !pass.busy && pass.pendingDown === 0 &&
        (pass.plannedAt ?? 0) >= needed;
      if (
        this.#caughtUpAt > 0 && (holdsData || Date.now() - this.#caughtUpAt > PROMOTE_ANYWAY_MS)
      ) {
        this.#promoting = true;
        try {
          await this.raft.proposeConfChange({ type: "promote", node: this.host.peerId });
          this.log.info("member promoted", { peer: this.host.peerId, role: "voter" });
        } catch (e) {
          if (!(e instanceof RaftError)) throw e;
        } finally {
          this.#promoting = false;
        }
      }
    }
  }

  /**
   * Keep a connection to every member. Raft needs both directions, and a member that joined
   * through someone else may have no address the others can dial yet: its outgoing
   * connection is how the leader first reaches it.
   */
  async #connectMembers(members: string[]): Promise<void> {
    const connected = new Set(this.host.connections().map((c) => c.peerId));
    const now = Date.now();
    await Promise.all(members.map(async (peer) => {
      if (peer === this.host.peerId || connected.has(peer)) return;
      if ((this.#lastDial.get(peer) ?? 0) > now - 2_000) return;
      this.#lastDial.set(peer, now);
      try {
        await this.host.libp2p.dial(peerIdFromString(peer), { signal: AbortSignal.timeout(5_000) });
      } catch (e) {
        this.log.debug("dial failed", { peer, error: (e as Error).message });
      }
    }));
  }

  /**
   * Remove a member through Raft. From the moment the change applies, every member's gate
   * refuses the removed peer (its connections are closed and new ones refused).
   */
  async removeMember(peerId: string): Promise<{ removed: string }> {
    const { voters, learners } = this.raft.status().config;
    if (!voters.includes(peerId) && !learners.includes(peerId)) {
      throw new Error(`${peerId} is not a member`);
    }
    await this.raft.proposeConfChange({ type: "remove", node: peerId });
    this.#refreshMembers();
    this.log.info("member removed", { peer: peerId });
    return { removed: peerId };
  }

  /** A new invite naming this node's addresses. */
  invite(opts: { ttlMs?: number; once?: boolean } = {}): string {
    return makeInvite(this.cluster, this.host.addrs(), opts);
  }

  /** Members, roles, leader, term, commit and applied index, connections. */
  async status(): Promise<NodeStatus> {
    const st = this.raft.status();
    const book = await this.index.peers();
    const conns = this.host.connections();
    const connected = new Set(conns.map((c) => c.peerId));
    const member = (peerId: string, role: "voter" | "learner") => ({
      peerId,
      role,
      addrs: peerId === this.host.peerId ? this.host.addrs() : book.get(peerId) ?? [],
      connected: peerId === this.host.peerId || connected.has(peerId),
    });
    return {
      dir: this.store.root,
      peerId: this.host.peerId,
      clusterId: this.cluster.clusterId,
      addrs: this.host.addrs(),
      role: st.role === RaftRole.Leader
        ? "leader"
        : st.config.learners.includes(st.id)
        ? "learner"
        : st.role,
      leader: st.lead,
      term: st.term,
      commit: st.committed,
      applied: st.applied,
      members: [
        ...st.config.voters.map((p) => member(p, "voter")),
        ...st.config.learners.map((p) => member(p, "learner")),
      ],
      connections: conns.map((c) => ({
        peerId: c.peerId,
        remoteAddr: c.remoteAddr,
        direction: c.direction,
        streams: c.streams,
      })),
      raftError: this.raft.error ? this.raft.error.message : null,
      sync: (() => {
        const p = this.#engine?.lastPass;
        return {
          passes: p?.passes ?? 0,
          busy: p?.busy ?? false,
          pendingUp: p?.pendingUp ?? 0,
          pendingUpBytes: p?.pendingUpBytes ?? 0,
          pendingDown: p?.pendingDown ?? 0,
          pendingDownBytes: p?.pendingDownBytes ?? 0,
          conflicts: p?.conflicts ?? 0,
          fetchedBytes: this.#fetchedBytes,
          receivedBytes: this.#receivedBytes,
          servedBytes: this.#servedBytes,
          ...(p ? waitingReasons(p) : { waitingUp: null, waitingDown: null }),
        };
      })(),
    };
  }

  /** Stop everything this node started, in reverse order. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    await this.control.close().catch(() => {});
    await this.#engine?.stop().catch(() => {});
    this.#fetcher?.close();
    await this.raft.stop().catch(() => {});
    await this.#bulkServer?.close().catch(() => {});
    await this.channel.close().catch(() => {});
    await this.host.stop().catch(() => {});
    await this.store.close().catch(() => {});
    this.log.info("stopped");
  }
}

/** Whether a label's version sees this record (it is the newest one at or below the label). */
function labelSees(labelVersion: number, r: IndexRecord, newestFirst: IndexRecord[]): boolean {
  const seen = newestFirst.find((v) => v.version <= labelVersion);
  return seen !== undefined && seen.version === r.version;
}
