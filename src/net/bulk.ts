/**
 * Bulk connections: object transfers over TLS 1.3 on TCP, beside libp2p's QUIC.
 *
 * Why: on this kind of machine QUIC through the native addon carried about 195 MiB/s between
 * two processes on loopback, its packet crypto and per-packet work taking a core's worth of CPU
 * per side, while Deno's own TLS over TCP carried about 1 GiB/s with one connection. Object
 * transfers (a joining node's whole tree) are the bulk of all bytes, so they take this path
 * when both ends offer it; everything else (Raft, joins, sessions) stays on libp2p, and objects
 * fall back to it whenever a bulk connection cannot be made.
 *
 * Trust comes from libp2p. A node makes a fresh key pair and self-signed certificate at start
 * (for the name `filesync.invalid`, which no public CA can certify). A member or client asks
 * for an offer over /filesync/bulk/1, on its authenticated libp2p connection, and is told the
 * TCP port, the certificate and a ticket: 32 random bytes bound to its peer id. It then dials
 * the port and pins the certificate (the only trust anchor of that TLS handshake), so it talks
 * to the node it asked; and it sends the ticket inside TLS, so the node knows who it talks to.
 * The ticket's peer must still be a member or admitted client at every connection and, like on
 * libp2p streams, at every request.
 */
import tls from "node:tls";
import { toHex } from "../chunk/mod.ts";
import { concatBytes } from "../wire/mod.ts";
import { BULK_TICKET_LENGTH, bulkCodec, type BulkMessage } from "./codec.ts";
import { type ByteConn, denoByteConn, nodeSocketByteConn } from "./byte_conn.ts";
import { ConnStream, type MessageStream } from "./conn_stream.ts";
import { deadline } from "./deadline.ts";
import { FramedStream } from "./framed_stream.ts";
import type { Host } from "./host.ts";

/** Protocol id of bulk offers. */
export const BULK_PROTOCOL = "/filesync/bulk/1";
/** The name in every bulk certificate and the one a dialer checks. */
const BULK_NAME = "filesync.invalid";
/** Version of the bulk handshake (the ticket, then one accepting byte). */
const BULK_VERSION = 1;
/** Byte the server sends once it accepted a ticket. */
const ACCEPTED = 1;
/** A bulk connection must send its ticket within this long, ms. */
const HANDSHAKE_MS = 5_000;
/**
 * A TCP connect to a bulk port gives up after this long, ms: a firewall that drops the port's
 * packets would otherwise hold the fetch for the system's SYN retries (minutes) before it
 * falls back to libp2p.
 */
const CONNECT_MS = 3_000;
/** Connections still in their handshake at once, at most (more are closed at once). */
const MAX_HANDSHAKING = 64;
/** Bulk connections per peer at once, at most. */
const MAX_CONNS_PER_PEER = 32;
/** After a failed bulk dial, the peer is reached over libp2p for this long, ms. */
const RETRY_AFTER_MS = 10_000;
/**
 * After a peer could not be reached at all to ask for its offer, ms. Its fetches fail over
 * libp2p too meanwhile; waiting RETRY_AFTER_MS left two members that joined at once moving a
 * large file's stripes over libp2p QUIC (a core's worth of CPU) once they could reach each other.
 */
const UNREACHABLE_RETRY_MS = 500;

/** After a peer answered without an offer, ms. */
const NO_OFFER_RETRY_MS = 1_000;

/** The peer could not be reached over libp2p to ask for an offer. */
class PeerUnreachable extends Error {
  constructor(cause: Error) {
    super(cause.message);
    this.name = "PeerUnreachable";
  }
}

/** What the objects server does with an accepted bulk connection. */
export type BulkStreamHandler = (stream: MessageStream, peer: string) => Promise<void>;

/** A certificate and its private key, both PEM. */
export interface TlsIdentity {
  cert: string;
  key: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join("\n")}\n-----END ${label}-----\n`;
}

/** A fresh ECDSA P-256 key and a self-signed end-entity certificate for BULK_NAME. */
export async function makeTlsIdentity(): Promise<TlsIdentity> {
  // Loaded here, not with the module: about 80 ms that one-shot clients, which never listen,
  // would pay on every start.
  const x509 = await import("@peculiar/x509");
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  x509.cryptoProvider.set(crypto);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: toHex(crypto.getRandomValues(new Uint8Array(8))),
    name: "CN=filesync",
    notBefore: new Date(now - 24 * 3600_000),
    notAfter: new Date(now + 10 * 365 * 24 * 3600_000),
    signingAlgorithm: alg,
    keys,
    extensions: [
      // Not a CA: a pinned certificate must not vouch for any other.
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: BULK_NAME }]),
    ],
  });
  return {
    cert: cert.toString("pem"),
    key: pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
  };
}

/** The IP of a multiaddr (`/ip4/1.2.3.4/...`, `/ip6/::1/...`), or null. */
export function ipOf(addr: string): string | null {
  const parts = addr.split("/");
  return parts[1] === "ip4" || parts[1] === "ip6" ? parts[2] : null;
}

/**
 * The address the bulk listener binds, from the node's listen addresses: their IP if they
 * share one, else every IPv4 interface.
 */
export function bulkHostname(listenAddrs: readonly string[]): string {
  const ips = new Set(listenAddrs.map(ipOf).filter((ip): ip is string => ip !== null));
  return ips.size === 1 ? [...ips][0] : "0.0.0.0";
}

/**
 * The first `n` bytes of a connection, or null if it ends (or is closed) first. Anything
 * beyond them in the same read is a protocol violation (nothing may follow before the answer).
 */
async function readFirst(conn: ByteConn, n: number): Promise<Uint8Array | null> {
  const parts: Uint8Array[] = [];
  let got = 0;
  while (got < n) {
    const chunk = await conn.readChunk();
    if (chunk === null) return null;
    parts.push(chunk);
    got += chunk.length;
  }
  return got === n ? concatBytes(parts) : null;
}

/** Race a step of a handshake against a timeout, which closes `conn` (ending the step). */
async function within<T>(ms: number, conn: ByteConn, p: Promise<T>): Promise<T> {
  const timer = setTimeout(() => conn.close(), ms);
  try {
    return await p;
  } finally {
    clearTimeout(timer);
  }
}

/** This node's bulk listener and the offers it hands out over libp2p. */
export class BulkServer {
  readonly #server: tls.Server;
  readonly #peerOfTicket = new Map<string, string>();
  readonly #ticketOfPeer = new Map<string, Uint8Array>();
  readonly #connsOf = new Map<string, number>();
  #handshaking = 0;
  #closed = false;
  #accepted = 0;

  private constructor(
    private readonly host: Host,
    private readonly identity: TlsIdentity,
    private readonly onStream: BulkStreamHandler,
  ) {
    this.#server = tls.createServer({
      cert: identity.cert,
      key: identity.key,
      minVersion: "TLSv1.3",
    }, (sock) => this.#admit(sock));
    this.#server.on("error", (e: Error) => host.logger.warn(`bulk listener: ${e.message}`));
  }

  /**
   * Listen on `hostname` (an IP; port chosen by the system) and answer offer requests, with
   * `identity` (default: a fresh one).
   */
  static async start(
    host: Host,
    hostname: string,
    onStream: BulkStreamHandler,
    identity?: TlsIdentity,
  ): Promise<BulkServer> {
    const server = new BulkServer(host, identity ?? await makeTlsIdentity(), onStream);
    await new Promise<void>((resolve, reject) => {
      server.#server.once("error", reject);
      server.#server.listen(0, hostname, () => {
        server.#server.off("error", reject);
        resolve();
      });
    });
    await host.handle(BULK_PROTOCOL, (stream, peer) => server.#answerOffer(stream, peer), {
      membersOnly: true,
      allowClients: true,
      maxInboundStreams: 8,
    });
    return server;
  }

  /** Bulk connections accepted so far (their tickets admitted). */
  get accepted(): number {
    return this.#accepted;
  }

  /** The TCP port bulk connections are taken on. */
  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  /** Stop taking bulk connections (those open stay until their peers end them). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.host.unhandle(BULK_PROTOCOL).catch(() => {});
    this.#server.close();
  }

  /** The ticket of `peer` (one per peer, made on first ask). */
  #ticketFor(peer: string): Uint8Array {
    let ticket = this.#ticketOfPeer.get(peer);
    if (ticket === undefined) {
      // Tickets of peers that are gone are forgotten: the maps stay as large as the cluster.
      for (const [p, t] of this.#ticketOfPeer) {
        if (!this.host.gate.isMember(p) && !this.host.gate.isClient(p)) {
          this.#ticketOfPeer.delete(p);
          this.#peerOfTicket.delete(toHex(t));
        }
      }
      ticket = crypto.getRandomValues(new Uint8Array(BULK_TICKET_LENGTH));
      this.#ticketOfPeer.set(peer, ticket);
      this.#peerOfTicket.set(toHex(ticket), peer);
    }
    return ticket;
  }

  async #answerOffer(stream: Parameters<Parameters<Host["handle"]>[1]>[0], peer: string) {
    const fs = new FramedStream<BulkMessage, BulkMessage>(stream, bulkCodec, bulkCodec);
    const timer = deadline(HANDSHAKE_MS);
    try {
      const req = await fs.expect("offerRequest", timer.signal);
      if (req.type !== "offerRequest") return;
      await fs.write(
        req.version === BULK_VERSION && !this.#closed
          ? {
            type: "offer",
            port: this.port,
            cert: this.identity.cert,
            ticket: this.#ticketFor(peer),
          }
          : { type: "noOffer", reason: `bulk version ${BULK_VERSION} only` },
        timer.signal,
      );
      await fs.close();
    } catch (e) {
      fs.abort(e as Error);
    } finally {
      timer.clear();
    }
  }

  /** Read the ticket; hand the connection on if it names a member or client. */
  async #admit(sock: tls.TLSSocket): Promise<void> {
    if (this.#closed || this.#handshaking >= MAX_HANDSHAKING) {
      sock.destroy();
      return;
    }
    sock.setNoDelay(true);
    const conn = nodeSocketByteConn(sock);
    this.#handshaking++;
    let peer: string | undefined;
    try {
      const ticket = await within(HANDSHAKE_MS, conn, readFirst(conn, BULK_TICKET_LENGTH));
      peer = ticket === null ? undefined : this.#peerOfTicket.get(toHex(ticket));
      const gate = this.host.gate;
      const admitted = peer !== undefined && (gate.isMember(peer) || gate.isClient(peer)) &&
        (this.#connsOf.get(peer) ?? 0) < MAX_CONNS_PER_PEER;
      if (!admitted) {
        if (ticket !== null) this.host.logger.warn("bulk connection refused: unknown ticket");
        conn.close();
        return;
      }
      await within(HANDSHAKE_MS, conn, conn.write(new Uint8Array([ACCEPTED])));
    } catch {
      conn.close();
      return;
    } finally {
      this.#handshaking--;
    }
    const who = peer!;
    this.#accepted++;
    this.#connsOf.set(who, (this.#connsOf.get(who) ?? 0) + 1);
    try {
      await this.onStream(new ConnStream(conn), who);
    } finally {
      const left = (this.#connsOf.get(who) ?? 1) - 1;
      if (left > 0) this.#connsOf.set(who, left);
      else this.#connsOf.delete(who);
    }
  }
}

/** An offer as the dialer keeps it. */
interface Offer {
  port: number;
  cert: string;
  ticket: Uint8Array;
}

/** Opens bulk connections to peers that offer them. */
export class BulkDialer {
  /** Offers taken, or being asked for (streams opened at once share one request). */
  readonly #offers = new Map<string, Promise<Offer | null>>();
  readonly #failedUntil = new Map<string, number>();

  constructor(private readonly host: Host) {}

  /**
   * A bulk connection to `peer`, or null if it cannot be had now (no offer, no IP address to
   * dial, a failed dial): the caller then uses libp2p.
   */
  async open(peer: string, signal?: AbortSignal): Promise<MessageStream | null> {
    if ((this.#failedUntil.get(peer) ?? 0) > Date.now()) return null;
    try {
      let asking = this.#offers.get(peer);
      if (asking === undefined) {
        asking = this.#askOffer(peer, signal);
        this.#offers.set(peer, asking);
      }
      const offer = await asking;
      if (offer === null) {
        // No offer: a peer without a bulk listener, or one that does not count us as a member
        // yet (a member that joined a moment ago). Cheap to ask again a little later.
        this.host.logger.info?.(`no bulk offer from ${peer}`);
        return this.#failed(peer, NO_OFFER_RETRY_MS);
      }
      // Dialed at the address libp2p reached it on (asking for the offer connected us).
      const via = this.host.connections().find((c) => c.peerId === peer);
      const ip = via ? ipOf(via.remoteAddr) : null;
      if (ip === null) return this.#failed(peer);
      const timeout = AbortSignal.timeout(CONNECT_MS);
      const tcp = await Deno.connect({
        hostname: ip,
        port: offer.port,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      tcp.setNoDelay(true);
      // Pinned: the offer's certificate is the only one this handshake trusts. The handshake
      // runs with the first write below, under its timeout.
      const conn = denoByteConn(
        await Deno.startTls(tcp, { hostname: BULK_NAME, caCerts: [offer.cert] }),
      );
      try {
        await within(HANDSHAKE_MS, conn, conn.write(offer.ticket));
        const ack = await within(HANDSHAKE_MS, conn, readFirst(conn, 1));
        if (ack === null || ack[0] !== ACCEPTED) throw new Error("ticket refused");
      } catch (e) {
        try {
          conn.close();
        } catch { /* closed already */ }
        throw e;
      }
      return new ConnStream(conn);
    } catch (e) {
      if (e instanceof PeerUnreachable) {
        // Not a failure of the bulk lane: libp2p cannot reach the peer either (a member that
        // joined a moment ago, whose addresses are not known yet). Asked again soon.
        this.host.logger.info?.(`no bulk offer from ${peer} yet: ${e.message}`);
        return this.#failed(peer, UNREACHABLE_RETRY_MS);
      }
      this.host.logger.warn(`bulk connection to ${peer} failed: ${(e as Error).message}`);
      return this.#failed(peer);
    }
  }

  /** Forget `peer`'s offer and use libp2p for a while (`retryMs`). */
  #failed(peer: string, retryMs = RETRY_AFTER_MS): null {
    this.#offers.delete(peer);
    this.#failedUntil.set(peer, Date.now() + retryMs);
    if (this.#failedUntil.size > 1024) this.#failedUntil.clear();
    return null;
  }

  async #askOffer(peer: string, signal?: AbortSignal): Promise<Offer | null> {
    let stream;
    try {
      stream = await this.host.openStream(peer, BULK_PROTOCOL, { signal });
    } catch (e) {
      throw new PeerUnreachable(e as Error);
    }
    const fs = new FramedStream<BulkMessage, BulkMessage>(stream, bulkCodec, bulkCodec);
    const timer = deadline(HANDSHAKE_MS);
    try {
      await fs.write({ type: "offerRequest", version: BULK_VERSION }, timer.signal);
      const reply = await fs.read(timer.signal);
      await fs.close();
      return reply?.type === "offer" ? reply : null;
    } catch (e) {
      fs.abort(e as Error);
      return null;
    } finally {
      timer.clear();
    }
  }
}
