/**
 * Who may talk to this node.
 *
 * Members (as the injected `isAllowedPeer` says, i.e. the Raft membership) may connect and use
 * every protocol. A stranger must be able to reach `/filesync/join/1` to become a member, so
 * once that protocol is served the connection gater lets strangers in on probation, under
 * three bounds:
 *  - per remote IP, a token bucket (a stranger cannot knock more than `strangerRate` allows);
 *  - at most `maxStrangers` stranger connections open at once;
 *  - a stranger's connection lives at most `strangerTtlMs` (the host's sweeper closes it),
 *    which is plenty for a join handshake and nothing more.
 * On such a connection only the join protocol answers: every other FileSync protocol handler
 * is registered as members-only and resets streams from non-members (checked again on every
 * message of long-lived streams, so a removed member loses access at once). Outbound, we dial
 * only members, except the server named by an invite while we join it.
 *
 * A third kind of peer is a client: a one-shot `filesync push`/`pull` that proved an invite's
 * secret over /filesync/client/1 but is not a member (it holds no vote and no copy). The
 * daemon admits it here for a limited time, renewed while it keeps working; until then its
 * connection is not swept, and the protocols registered with `allowClients` (objects, session)
 * answer it. Raft never does.
 */
import type { ConnectionGater, MultiaddrConnection, PeerId } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { type RateLimit, RateLimiter } from "./rate_limit.ts";

/** Bounds on connections from peers that are not members (joiners). */
export interface AdmissionLimits {
  /**
   * Accept non-member connections at all, once a join protocol is served (`openForJoins`).
   * Default true; false makes the node refuse every stranger at connect.
   */
  acceptStrangers: boolean;
  /** Longest a non-member connection may stay open, ms. Default 15,000. */
  strangerTtlMs: number;
  /** Most non-member connections open at once. Default 16. */
  maxStrangers: number;
  /** Non-member connections per remote IP. Default burst 10, then one per 2 s. */
  strangerRate: RateLimit;
  /** Join attempts per remote IP (checked by the join handler). Default burst 5, one per 5 s. */
  joinRate: RateLimit;
  /** Client handshakes per remote IP. Default burst 20, then one per second. */
  clientRate: RateLimit;
  /** Most clients admitted at once. Default 64. */
  maxClients: number;
  /** Most clients admitted at once from one remote IP. Default 16. */
  maxClientsPerIp: number;
  /** A client's admission lasts this long after its last request, ms. Default 5 minutes. */
  clientTtlMs: number;
}

/** Defaults of AdmissionLimits. */
export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = {
  acceptStrangers: true,
  strangerTtlMs: 15_000,
  maxStrangers: 16,
  strangerRate: { burst: 10, perSecond: 0.5 },
  joinRate: { burst: 5, perSecond: 0.2 },
  clientRate: { burst: 20, perSecond: 1 },
  maxClients: 64,
  maxClientsPerIp: 16,
  clientTtlMs: 5 * 60_000,
};

/** The IP of a multiaddr (`/ip4/x/...` or `/ip6/x/...`), or its full text if it has none. */
export function remoteIp(addr: Multiaddr): string {
  for (const c of addr.getComponents()) {
    if ((c.name === "ip4" || c.name === "ip6") && c.value !== undefined) return c.value;
  }
  return addr.toString();
}

/** The peer id named by a multiaddr's last /p2p component, if any. */
function peerOf(addr: Multiaddr): string | undefined {
  return addr.getComponents().findLast((c) => c.name === "p2p")?.value;
}

/** Membership-based admission decisions, shared by the gater and the protocol handlers. */
export class PeerGate {
  readonly limits: AdmissionLimits;
  readonly #connRate: RateLimiter;
  readonly joinRate: RateLimiter;
  readonly clientRate: RateLimiter;
  /** Admitted clients: when their admission ends, the latest it may be renewed to, their IP. */
  readonly #clients = new Map<string, { until: number; cap: number; ip: string }>();
  readonly #dialExceptions = new Map<string, number>();
  #joinsOpen = false;

  constructor(
    private readonly isAllowedPeer: (peerId: string) => boolean,
    limits: Partial<AdmissionLimits>,
    /** Current number of open connections from non-members (the host counts them). */
    private readonly strangerCount: () => number,
  ) {
    this.limits = { ...DEFAULT_ADMISSION_LIMITS, ...limits };
    this.#connRate = new RateLimiter(this.limits.strangerRate);
    this.joinRate = new RateLimiter(this.limits.joinRate);
    this.clientRate = new RateLimiter(this.limits.clientRate);
  }

  /**
   * Admit a client (a peer that proved an invite's secret) for `clientTtlMs`, renewable while
   * it works but never past `capUntil` (its invite's expiry, say). Returns false when
   * `maxClients` others, or `maxClientsPerIp` from its IP, are admitted already.
   */
  admitClient(peerId: string, ip: string, capUntil: number): boolean {
    const now = Date.now();
    for (const [p, c] of this.#clients) if (c.until <= now) this.#clients.delete(p);
    if (!this.#clients.has(peerId)) {
      if (this.#clients.size >= this.limits.maxClients) return false;
      let fromIp = 0;
      for (const c of this.#clients.values()) if (c.ip === ip) fromIp++;
      if (fromIp >= this.limits.maxClientsPerIp) return false;
    }
    this.#clients.set(peerId, {
      until: Math.min(now + this.limits.clientTtlMs, capUntil),
      cap: capUntil,
      ip,
    });
    return true;
  }

  /** A client made a request: its admission runs `clientTtlMs` from now (up to its cap). */
  renewClient(peerId: string): void {
    const c = this.#clients.get(peerId);
    if (c && c.until > Date.now()) c.until = Math.min(Date.now() + this.limits.clientTtlMs, c.cap);
  }

  /** End a client's admission now (its connections close at the next sweep). */
  dropClient(peerId: string): void {
    this.#clients.delete(peerId);
  }

  /** Is this peer an admitted client right now? */
  isClient(peerId: string): boolean {
    const c = this.#clients.get(peerId);
    return c !== undefined && c.until > Date.now();
  }

  /** Is this peer a member right now? Exceptions in the callback count as "no". */
  isMember(peerId: string): boolean {
    try {
      return this.isAllowedPeer(peerId) === true;
    } catch {
      return false;
    }
  }

  /** May we dial this peer? Members, and a peer we are currently joining through. */
  mayDial(peerId: string): boolean {
    return this.isMember(peerId) || this.#dialExceptions.has(peerId);
  }

  /**
   * Permit dialing a non-member for the duration of `fn` (joining a cluster through an
   * invite: the invite's /p2p id authenticates that server, membership cannot yet).
   */
  async withDialException<T>(peerId: string, fn: () => Promise<T>): Promise<T> {
    this.#dialExceptions.set(peerId, (this.#dialExceptions.get(peerId) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      const n = (this.#dialExceptions.get(peerId) ?? 1) - 1;
      if (n <= 0) this.#dialExceptions.delete(peerId);
      else this.#dialExceptions.set(peerId, n);
    }
  }

  /**
   * Let strangers connect (within the limits) because a join protocol now answers them.
   * Until this is called, only members can connect at all.
   */
  openForJoins(): void {
    this.#joinsOpen = true;
  }

  /** Decide on an inbound connection whose peer id is authenticated. */
  admitInbound(peerId: string, remoteAddr: Multiaddr): boolean {
    if (this.isMember(peerId) || this.isClient(peerId)) return true;
    if (!this.limits.acceptStrangers || !this.#joinsOpen) return false;
    if (this.strangerCount() >= this.limits.maxStrangers) return false;
    return this.#connRate.tryTake(remoteIp(remoteAddr));
  }

  /** The libp2p ConnectionGater enforcing these rules (`true` means deny). */
  connectionGater(): ConnectionGater {
    return {
      denyDialPeer: (peerId: PeerId) => !this.mayDial(peerId.toString()),
      denyDialMultiaddr: (ma: Multiaddr) => {
        const peer = peerOf(ma);
        return peer !== undefined && !this.mayDial(peer);
      },
      denyOutboundConnection: (peerId: PeerId) => !this.mayDial(peerId.toString()),
      denyOutboundEncryptedConnection: (peerId: PeerId) => !this.mayDial(peerId.toString()),
      denyInboundEncryptedConnection: (peerId: PeerId, maConn: MultiaddrConnection) =>
        !this.admitInbound(peerId.toString(), maConn.remoteAddr),
      // Peers learn addresses only from us (no discovery); keep what the daemon records.
      filterMultiaddrForPeer: () => true,
    };
  }
}
