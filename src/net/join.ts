/**
 * /filesync/join/1: how a node that holds an invite becomes a member.
 *
 *   joiner                                  member (server)
 *   hello {version, clusterId, inviteId, clientNonce}  ->
 *                     <-  challenge {serverNonce, serverProof}   (or rejected {reason})
 *   (joiner checks serverProof: the server knows the invite secret)
 *   proof {clientProof}                                ->
 *                     <-  accepted {members, data}               (or rejected {reason})
 *
 * Proofs are HMACs keyed with the invite secret (join_proof.ts). The server checks the
 * invite's expiry, then calls the injected `admit` (the daemon adds the peer through Raft and
 * answers with the membership). Strangers reach this protocol on probation (gate.ts); join
 * attempts are also rate-limited per remote IP here.
 */
import { toHex } from "../chunk/hash.ts";
import {
  JOIN_VERSION,
  type JoinMessage,
  joinRequestCodec,
  joinResponseCodec,
  type MemberInfo,
  NONCE_LENGTH,
} from "./codec.ts";
import { InviteError, JoinError, WireDecodeError } from "./errors.ts";
import { deadline } from "./deadline.ts";
import { FramedStream } from "./framed_stream.ts";
import { remoteIp } from "./gate.ts";
import type { Host } from "./host.ts";
import { type Invite, invitePeers } from "./invite.ts";
import { joinProof, type JoinTranscript, verifyJoinProof } from "./join_proof.ts";
import { fromHex } from "../chunk/hash.ts";

/** Protocol id of the join handshake. */
export const JOIN_PROTOCOL = "/filesync/join/1";
/**
 * Protocol id of the same handshake run by a one-shot client (`filesync push`/`pull`): it
 * proves the invite the same way, but the server admits it as a client for a while instead of
 * making it a member. A separate id, so a server never mistakes one intent for the other.
 */
export const CLIENT_PROTOCOL = "/filesync/client/1";

/** What the server knows about an invite id. */
export interface InviteSecret {
  secret: Uint8Array;
  /** Unix ms after which the invite is refused; null = never. */
  expiresAt: number | null;
}

/** A joiner that proved knowledge of an invite's secret. */
export interface JoinRequest {
  peerId: string;
  /** Hex invite id (e.g. to consume a --once invite). */
  inviteId: string;
  remoteAddr: string;
}

/** The server's answer to an admitted joiner. */
export interface JoinAdmission {
  /** Current members and their addresses (the joiner connects to them). */
  members: MemberInfo[];
  /** Opaque extra information for the joiner's daemon (at most 256 KiB). */
  data?: Uint8Array;
}

/** Throw this from `admit` to refuse a joiner with a reason it will be shown. */
export class JoinRefusal extends Error {
  override name = "JoinRefusal";
}

/** Options of serveJoin. */
export interface JoinServerOptions {
  clusterId: string;
  /** Look up an invite by its hex id; null if unknown or revoked. */
  resolveInvite(inviteId: string): Promise<InviteSecret | null> | InviteSecret | null;
  /** Make the (authenticated) joiner a member; resolves once it is allowed in. */
  admit(request: JoinRequest): Promise<JoinAdmission>;
  /** Time a joiner has for the whole handshake, ms (default 10,000). */
  timeoutMs?: number;
  now?: () => number;
  /** Protocol id to serve (default JOIN_PROTOCOL; CLIENT_PROTOCOL for one-shot clients). */
  protocol?: string;
}

/** What a successful join returns. */
export interface JoinResult {
  /** The member that admitted us. */
  serverPeer: string;
  members: MemberInfo[];
  data: Uint8Array;
}

type JoinStream = FramedStream<JoinMessage, JoinMessage>;

/** Serve the join protocol on this host (open to non-members, rate-limited). */
export async function serveJoin(host: Host, opts: JoinServerOptions): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const now = opts.now ?? (() => Date.now());
  const protocol = opts.protocol ?? JOIN_PROTOCOL;
  const rate = protocol === JOIN_PROTOCOL ? host.gate.joinRate : host.gate.clientRate;
  await host.handle(protocol, async (stream, peer, connection) => {
    const ip = remoteIp(connection.remoteAddr);
    const fs: JoinStream = new FramedStream(stream, joinRequestCodec, joinResponseCodec);
    const timer = deadline(timeoutMs);
    const signal = timer.signal;
    const reject = async (reason: string) => {
      await fs.write({ type: "rejected", reason }, signal).catch(() => {});
      await fs.close();
    };
    if (!rate.tryTake(ip)) {
      host.logger.warn(`join from ${peer} at ${ip} refused: rate limited`);
      await reject("too many join attempts from your address; try again later");
      timer.clear();
      return;
    }
    try {
      const hello = await fs.expect("hello", signal);
      if (hello.type !== "hello") return await reject(`expected hello, got ${hello.type}`);
      if (hello.version !== JOIN_VERSION) {
        return await reject(`unsupported join version ${hello.version} (want ${JOIN_VERSION})`);
      }
      if (hello.clusterId !== opts.clusterId) {
        return await reject("this node is not a member of the invite's cluster");
      }
      const inviteId = toHex(hello.inviteId);
      const invite = await opts.resolveInvite(inviteId);
      if (invite === null) return await reject("unknown or revoked invite");
      if (invite.expiresAt !== null && invite.expiresAt <= now()) {
        return await reject("invite expired; ask a member for a new one");
      }
      const t: JoinTranscript = {
        clusterId: opts.clusterId,
        inviteId: hello.inviteId,
        clientNonce: hello.nonce,
        serverNonce: crypto.getRandomValues(new Uint8Array(NONCE_LENGTH)),
        serverPeer: host.peerId,
        clientPeer: peer,
      };
      await fs.write(
        { type: "challenge", nonce: t.serverNonce, proof: joinProof(invite.secret, "server", t) },
        signal,
      );
      const answer = await fs.read(signal);
      if (answer === null) {
        host.logger.warn(`join from ${peer} at ${ip} abandoned (the invite secret did not match)`);
        return;
      }
      if (answer.type !== "proof") return await reject(`expected proof, got ${answer.type}`);
      if (!verifyJoinProof(invite.secret, "client", t, answer.proof)) {
        host.logger.warn(`join from ${peer} at ${ip} refused: wrong invite secret`);
        return await reject("wrong invite secret");
      }
      if (invite.expiresAt !== null && invite.expiresAt <= now()) {
        return await reject("invite expired; ask a member for a new one");
      }
      let admission: JoinAdmission;
      try {
        admission = await opts.admit({ peerId: peer, inviteId, remoteAddr: ip });
      } catch (err) {
        if (err instanceof JoinRefusal) return await reject(err.message);
        host.logger.warn(`admitting ${peer} failed: ${(err as Error).message}`);
        return await reject("admission failed on the server; try again");
      }
      await fs.write(
        {
          type: "accepted",
          members: admission.members,
          data: admission.data ?? new Uint8Array(0),
        },
        signal,
      );
      await fs.close();
    } catch (err) {
      if (err instanceof WireDecodeError) {
        host.logger.warn(`join from ${peer} at ${ip}: bad message: ${err.message}`);
      }
      fs.abort(err as Error);
    } finally {
      timer.clear();
    }
  }, { membersOnly: false, maxInboundStreams: 4, maxOutboundStreams: 4 });
  host.gate.openForJoins();
}

/** Options of joinCluster. */
export interface JoinOptions {
  /** Time for the whole handshake with one member, ms (default 15,000). */
  timeoutMs?: number;
  signal?: AbortSignal;
  now?: number;
  /** Protocol id (default JOIN_PROTOCOL; CLIENT_PROTOCOL to be admitted as a client). */
  protocol?: string;
}

/**
 * Join the cluster named by an invite: try the invite's members in turn until one answers,
 * prove knowledge of the secret, check that the member knows it too, and return the
 * membership it sent. Throws JoinError (unreachable, rejected, secret-mismatch, protocol,
 * timeout) or InviteError (expired); on error nothing has changed on either side.
 */
export async function joinCluster(
  host: Host,
  invite: Invite,
  opts: JoinOptions = {},
): Promise<JoinResult> {
  const now = opts.now ?? Date.now();
  if (invite.expiresAt !== null && invite.expiresAt <= now) {
    throw new InviteError("expired", "invite expired; ask a member for a new one");
  }
  const failures: string[] = [];
  for (const { peerId, addrs } of invitePeers(invite)) {
    if (peerId === host.peerId) continue;
    try {
      const result = await host.gate.withDialException(
        peerId,
        () => joinThrough(host, invite, peerId, addrs, opts),
      );
      for (const m of result.members) {
        if (m.peerId !== host.peerId && m.addrs.length > 0) {
          await host.rememberPeer(m.peerId, m.addrs).catch(() => {});
        }
      }
      return result;
    } catch (err) {
      if (!(err instanceof JoinError) || err.code !== "unreachable") throw err;
      failures.push(err.message);
    }
  }
  throw new JoinError(
    "unreachable",
    `no member in the invite could be reached: ${failures.join("; ") || "no other peers"}`,
  );
}

/**
 * Run the handshake through one given member (e.g. one a previous handshake listed), allowed
 * to dial it for the duration. Throws JoinError as joinCluster does.
 */
export function joinVia(
  host: Host,
  invite: Invite,
  peerId: string,
  addrs: string[],
  opts: JoinOptions = {},
): Promise<JoinResult> {
  return host.gate.withDialException(
    peerId,
    () => joinThrough(host, invite, peerId, addrs, opts),
  );
}

async function joinThrough(
  host: Host,
  invite: Invite,
  serverPeer: string,
  addrs: string[],
  opts: JoinOptions,
): Promise<JoinResult> {
  const timer = deadline(opts.timeoutMs ?? 15_000);
  try {
    return await handshake(host, invite, serverPeer, addrs, opts, timer.signal);
  } finally {
    timer.clear();
  }
}

async function handshake(
  host: Host,
  invite: Invite,
  serverPeer: string,
  addrs: string[],
  opts: JoinOptions,
  timeout: AbortSignal,
): Promise<JoinResult> {
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  let stream;
  try {
    stream = await host.openStream(serverPeer, opts.protocol ?? JOIN_PROTOCOL, { addrs, signal });
  } catch (err) {
    throw new JoinError("unreachable", `${addrs[0]}: ${(err as Error).message}`);
  }
  const fs: JoinStream = new FramedStream(stream, joinResponseCodec, joinRequestCodec);
  try {
    const t: JoinTranscript = {
      clusterId: invite.clusterId,
      inviteId: fromHex(invite.inviteId),
      clientNonce: crypto.getRandomValues(new Uint8Array(NONCE_LENGTH)),
      serverNonce: new Uint8Array(0),
      serverPeer,
      clientPeer: host.peerId,
    };
    await fs.write({
      type: "hello",
      version: JOIN_VERSION,
      clusterId: invite.clusterId,
      inviteId: t.inviteId,
      nonce: t.clientNonce,
    }, signal);
    const challenge = await fs.expect("challenge", signal);
    if (challenge.type === "rejected") throw new JoinError("rejected", challenge.reason);
    if (challenge.type !== "challenge") {
      throw new JoinError("protocol", `expected challenge, got ${challenge.type}`);
    }
    t.serverNonce = challenge.nonce;
    if (!verifyJoinProof(invite.secret, "server", t, challenge.proof)) {
      fs.abort(new Error("secret mismatch"));
      throw new JoinError(
        "secret-mismatch",
        `${serverPeer} does not know this invite's secret: the invite is wrong or damaged`,
      );
    }
    await fs.write({ type: "proof", proof: joinProof(invite.secret, "client", t) }, signal);
    const answer = await fs.expect("answer", signal);
    if (answer.type === "rejected") throw new JoinError("rejected", answer.reason);
    if (answer.type !== "accepted") {
      throw new JoinError("protocol", `expected accepted, got ${answer.type}`);
    }
    await fs.close();
    return { serverPeer, members: answer.members, data: answer.data };
  } catch (err) {
    fs.abort(err as Error);
    if (err instanceof JoinError) throw err;
    if (signal.aborted) {
      throw new JoinError("timeout", `join through ${serverPeer} timed out`);
    }
    if (err instanceof WireDecodeError) {
      throw new JoinError("protocol", `bad message from ${serverPeer}: ${err.message}`);
    }
    throw new JoinError("protocol", `join through ${serverPeer} failed: ${(err as Error).message}`);
  }
}
