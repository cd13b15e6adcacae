/**
 * The libp2p host of a FileSync node: QUIC (TCP + noise + yamux as an optional fallback), the
 * node's persistent Ed25519 identity, and the membership gate (gate.ts). Protocol modules
 * (join, raft channel, objects) register handlers through `handle()`, which enforces the
 * members-only rule, and open streams with `openStream()`.
 */
import "./deno_compat_install.ts";
import { createLibp2p, type Libp2p, type Libp2pOptions } from "libp2p";
import { quic } from "@chainsafe/libp2p-quic";
import { peerIdFromString } from "@libp2p/peer-id";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import type { Connection, Stream } from "@libp2p/interface";
import { NotMemberError } from "./errors.ts";
import { type AdmissionLimits, PeerGate } from "./gate.ts";
import { loadOrCreateIdentity } from "./identity.ts";
import { consoleLogger, type NetLogger } from "./log.ts";
import { installQuicReadSize, QUIC_READ_SIZE } from "./quic_read_size.ts";

type MuxerFactory = NonNullable<Libp2pOptions["streamMuxers"]>[number];

/** Default listen address: QUIC on every IPv4 interface, UDP port 4001. */
export const DEFAULT_LISTEN = ["/ip4/0.0.0.0/udp/4001/quic-v1"];

/**
 * QUIC flow-control and buffer settings (passed to @chainsafe/libp2p-quic), plus the native
 * read size. The library's flow-control defaults (10 MB per stream, 15 MB per connection)
 * let only 1.5 streams' worth of data be in flight per connection; ours give every stream of
 * a multi-stream transfer its full window (several 16 MiB streams under a 64 MiB connection
 * window), which matters once the round trip is longer than loopback's: the window caps a
 * stream at window/RTT. On 127.0.0.1 both measure the same (bench --quic-defaults); what does
 * matter there is `readSize` (about 2.5x, see quic_read_size.ts).
 */
export interface QuicTuning {
  /** Bytes a peer may send on one stream before it must wait for us to read. */
  maxStreamData: number;
  /** Bytes a peer may send on all streams of a connection before it must wait. */
  maxConnectionData: number;
  /** UDP socket receive buffer (clamped by the OS maximum). */
  receiveBufferSize: number;
  /** UDP socket send buffer (clamped by the OS maximum). */
  sendBufferSize: number;
  /** Most concurrent bidirectional streams a peer may open. */
  maxConcurrentStreamLimit: number;
  /** Idle time after which a connection is considered dead, ms. */
  maxIdleTimeout: number;
  /** Keep-alive period, ms (below maxIdleTimeout). */
  keepAliveInterval: number;
  /** Handshake timeout, ms. */
  handshakeTimeout: number;
  /**
   * Bytes asked of the native stream per read (see quic_read_size.ts). Process-wide: the
   * last host created sets it for all. The library's own value is 4 KiB.
   */
  readSize: number;
}

/** Our defaults for QuicTuning (bench/transport_bench.ts compares them with the library's). */
export const DEFAULT_QUIC_TUNING: QuicTuning = {
  maxStreamData: 16 * 1024 * 1024,
  maxConnectionData: 64 * 1024 * 1024,
  receiveBufferSize: 4 * 1024 * 1024,
  sendBufferSize: 4 * 1024 * 1024,
  maxConcurrentStreamLimit: 256,
  maxIdleTimeout: 10_000,
  keepAliveInterval: 3_000,
  handshakeTimeout: 5_000,
  readSize: QUIC_READ_SIZE,
};

/** Options of createHost. */
export interface HostOptions {
  /** File holding the node's private key (created with mode 0600 if missing). */
  identityPath: string;
  /** Multiaddrs to listen on (default DEFAULT_LISTEN); port 0 picks a free port. */
  listen?: string[];
  /**
   * Also listen on and dial TCP (noise + yamux). For each QUIC listen address without a TCP
   * counterpart in `listen`, the same IP and port number are used for TCP.
   */
  enableTcp?: boolean;
  /** Is this peer a cluster member? Consulted on every connection and protocol stream. */
  isAllowedPeer: (peerId: string) => boolean;
  /** Bounds on non-member (joining) connections. */
  admission?: Partial<AdmissionLimits>;
  /** QUIC flow-control settings. */
  quic?: Partial<QuicTuning>;
  /** Where warnings go (bad peers, refused streams). Default: stderr. */
  logger?: NetLogger;
}

/** What a protocol handler is given for an inbound stream. */
export type ProtocolHandler = (
  stream: Stream,
  remotePeer: string,
  connection: Connection,
) => void | Promise<void>;

/** Options of Host.handle. */
export interface HandleOptions {
  /** Refuse (reset) streams from non-members. Only the join protocols set this to false. */
  membersOnly: boolean;
  /** With membersOnly: also answer admitted clients (gate.ts). Default false. */
  allowClients?: boolean;
  /** Concurrent inbound streams of this protocol per connection (default 64). */
  maxInboundStreams?: number;
  /** Concurrent outbound streams of this protocol per connection (default 64). */
  maxOutboundStreams?: number;
}

/** A connection as reported by Host.connections(). */
export interface ConnectionInfo {
  peerId: string;
  remoteAddr: string;
  direction: "inbound" | "outbound";
  member: boolean;
  openedAt: number;
  streams: number;
}

/** A running libp2p host. */
export interface Host {
  /** This node's peer id. */
  readonly peerId: string;
  /** The membership gate (shared with protocol modules). */
  readonly gate: PeerGate;
  /** Warnings sink. */
  readonly logger: NetLogger;
  /** The underlying libp2p node (for diagnostics and benchmarks; prefer the methods here). */
  readonly libp2p: Libp2p;
  /** Addresses we listen on, each ending in /p2p/<our peer id>. */
  addrs(): string[];
  /** Record addresses of a peer so openStream can reach it by peer id. */
  rememberPeer(peerId: string, addrs: string[]): Promise<void>;
  /** Register a protocol handler (see HandleOptions.membersOnly). */
  handle(protocol: string, handler: ProtocolHandler, options: HandleOptions): Promise<void>;
  /** Remove a protocol handler. */
  unhandle(protocol: string): Promise<void>;
  /** Open a stream to a peer (dialing it if needed); members only, see PeerGate. */
  openStream(
    peerId: string,
    protocol: string,
    options?: { signal?: AbortSignal; addrs?: string[] },
  ): Promise<Stream>;
  /** Open connections, for status output. */
  connections(): ConnectionInfo[];
  /**
   * Apply the membership now: close the connections of removed members, and of strangers
   * past their join window. Call after a membership change (a periodic sweep does it too).
   */
  revalidate(): Promise<void>;
  /** Stop listening and close every connection. */
  stop(): Promise<void>;
}

/** Strip a trailing /p2p/<id> so an address can be stored for that peer. */
function transportPart(addr: Multiaddr): Multiaddr {
  const comps = addr.getComponents();
  const last = comps.length > 0 ? comps[comps.length - 1] : undefined;
  return last?.name === "p2p" ? multiaddr(comps.slice(0, -1)) : addr;
}

/** For `enableTcp`: the TCP twin of each QUIC address (same IP, same port number). */
function withTcp(listen: string[]): string[] {
  const out = [...listen];
  const hasTcp = (ip: string) => listen.some((a) => a.startsWith(ip) && a.includes("/tcp/"));
  for (const a of listen) {
    const m = /^(\/ip[46]\/[^/]+)\/udp\/(\d+)\/quic-v1$/.exec(a);
    if (m !== null && !hasTcp(m[1])) out.push(`${m[1]}/tcp/${m[2]}`);
  }
  return out;
}

/**
 * The TCP fallback's transport, encrypter (noise) and muxer (yamux), loaded only for hosts
 * that enable it: the three packages take about 40 ms to load, on every start of a node or a
 * one-shot client that would never use them.
 */
async function loadTcpStack() {
  const [{ tcp }, { noise }, { yamux }] = await Promise.all([
    import("@libp2p/tcp"),
    import("@chainsafe/libp2p-noise"),
    import("@chainsafe/libp2p-yamux"),
  ]);
  return {
    transport: tcp(),
    encrypter: noise(),
    // yamux's types reference a second copy of uint8arraylist in node_modules; the runtime
    // objects are compatible, only the declarations differ.
    muxer: yamux() as unknown as MuxerFactory,
  };
}

/** Create and start a host. */
export async function createHost(options: HostOptions): Promise<Host> {
  const { readSize, ...tuning } = { ...DEFAULT_QUIC_TUNING, ...options.quic };
  await installQuicReadSize(readSize);
  const identity = await loadOrCreateIdentity(options.identityPath);
  const logger = options.logger ?? consoleLogger();
  const listen = options.listen ?? DEFAULT_LISTEN;
  for (const a of listen) multiaddr(a); // throws a clear error for a malformed address

  // The gate counts stranger connections through the node, which needs the gate to be built.
  const ref: { node?: Libp2p } = {};
  const gate = new PeerGate(options.isAllowedPeer, options.admission ?? {}, () => {
    let n = 0;
    for (const c of ref.node?.getConnections() ?? []) {
      const peer = c.remotePeer.toString();
      if (!gate.isMember(peer) && !gate.isClient(peer)) n++;
    }
    return n;
  });

  const tcpStack = options.enableTcp ? await loadTcpStack() : null;
  const libp2p = await createLibp2p({
    privateKey: identity.privateKey,
    addresses: { listen: tcpStack ? withTcp(listen) : listen },
    transports: tcpStack ? [quic(tuning), tcpStack.transport] : [quic(tuning)],
    connectionEncrypters: tcpStack ? [tcpStack.encrypter] : [],
    streamMuxers: tcpStack ? [tcpStack.muxer] : [],
    connectionGater: gate.connectionGater(),
    // No ping protocol is served (only FileSync protocols are), so the monitor must not run;
    // QUIC keep-alives detect dead peers.
    connectionMonitor: { enabled: false },
    connectionManager: { maxConnections: 1024, maxIncomingPendingConnections: 64 },
  });
  ref.node = libp2p;

  // Connections whose peer has been a member while they were open. When such a peer stops
  // being a member it was removed, and its connections close at the next sweep; a stranger
  // (a joiner) instead gets `strangerTtlMs` to finish its handshake.
  const memberConnections = new WeakSet<Connection>();
  libp2p.addEventListener("connection:open", (evt) => {
    if (gate.isMember(evt.detail.remotePeer.toString())) memberConnections.add(evt.detail);
  });
  const sweep = async () => {
    const now = Date.now();
    const closing: Promise<void>[] = [];
    for (const c of libp2p.getConnections()) {
      const peer = c.remotePeer.toString();
      if (gate.isMember(peer)) {
        memberConnections.add(c);
        continue;
      }
      if (gate.isClient(peer)) continue;
      const age = now - c.timeline.open;
      const removed = memberConnections.has(c);
      if (removed || age >= gate.limits.strangerTtlMs) {
        logger.info?.(
          removed
            ? `closing connection of removed member ${peer}`
            : `closing connection of non-member ${peer} (${Math.round(age)} ms old)`,
        );
        closing.push(c.close().catch(() => c.abort(new NotMemberError("not a member"))));
      }
    }
    await Promise.all(closing);
  };
  const sweeper = setInterval(() => {
    sweep().catch((err) => logger.warn(`connection sweep failed: ${err}`));
  }, Math.max(250, Math.min(1000, gate.limits.strangerTtlMs / 4)));

  const host: Host = {
    peerId: identity.peerId,
    gate,
    logger,
    libp2p,
    addrs: () => libp2p.getMultiaddrs().map((a) => a.toString()),
    async rememberPeer(peerId, addrs) {
      const id = peerIdFromString(peerId);
      const mas = addrs.map((a) => transportPart(multiaddr(a)));
      await libp2p.peerStore.merge(id, { multiaddrs: mas });
    },
    async handle(protocol, handler, opts) {
      await libp2p.handle(protocol, async (stream, connection) => {
        const peer = connection.remotePeer.toString();
        if (
          opts.membersOnly && !gate.isMember(peer) && !(opts.allowClients && gate.isClient(peer))
        ) {
          logger.warn(`refused ${protocol} stream from non-member ${peer}`);
          stream.abort(new NotMemberError(`${peer} is not a member`));
          return;
        }
        try {
          await handler(stream, peer, connection);
        } catch (err) {
          logger.warn(`${protocol} handler for ${peer} failed: ${(err as Error).message}`);
          stream.abort(err as Error);
        }
      }, {
        maxInboundStreams: opts.maxInboundStreams ?? 64,
        maxOutboundStreams: opts.maxOutboundStreams ?? 64,
      });
    },
    async unhandle(protocol) {
      await libp2p.unhandle(protocol);
    },
    async openStream(peerId, protocol, opts = {}) {
      if (opts.addrs !== undefined && opts.addrs.length > 0) {
        await host.rememberPeer(peerId, opts.addrs);
      }
      return await libp2p.dialProtocol(peerIdFromString(peerId), protocol, {
        signal: opts.signal,
      });
    },
    connections: () =>
      libp2p.getConnections().map((c) => ({
        peerId: c.remotePeer.toString(),
        remoteAddr: c.remoteAddr.toString(),
        direction: c.direction,
        member: gate.isMember(c.remotePeer.toString()),
        openedAt: c.timeline.open,
        streams: c.streams.length,
      })),
    revalidate: () => sweep(),
    async stop() {
      clearInterval(sweeper);
      await libp2p.stop();
    },
  };
  return host;
}
