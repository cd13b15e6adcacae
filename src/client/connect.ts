/**
 * A one-shot client's connection to a cluster: an ephemeral libp2p identity (nothing is left
 * on disk), the invite proved over /filesync/client/1 to the first member that answers (the
 * gateway), and a session with it. The client is not a member: it cannot vote, and members
 * answer it only on the objects and session protocols, for as long as it keeps working.
 */
import {
  BulkDialer,
  CLIENT_PROTOCOL,
  consoleLogger,
  createHost,
  type Host,
  InviteError,
  joinCluster,
  JoinError,
  joinVia,
  type MemberInfo,
  ObjectFetcher,
  ObjectPusher,
  parseInvite,
  SessionClient,
} from "../net/mod.ts";
import type { Invite } from "../net/mod.ts";

/** A client failure with a one-line message and a suggested exit code. */
export class ClientError extends Error {
  override name = "ClientError";
  constructor(
    readonly code:
      | "bad-invite"
      | "unreachable"
      | "no-quorum"
      | "conflict"
      | "rejected"
      | "unreadable"
      | "disk"
      | "corrupt"
      | "timeout"
      | "usage"
      /** The gateway proposed the batch but could not learn whether it committed. */
      | "unknown-outcome",
    message: string,
  ) {
    super(message);
  }
}

/** Options of connectCluster. */
export interface ConnectOptions {
  signal?: AbortSignal;
  /** Multiaddrs the client's transport binds (default: any UDP port on every interface). */
  listen?: string[];
}

/** A connected client. */
export interface ClusterClient {
  readonly host: Host;
  readonly invite: Invite;
  /** The member serving this client. */
  readonly gateway: string;
  readonly session: SessionClient;
  readonly members: MemberInfo[];
  readonly fetcher: ObjectFetcher;
  readonly pusher: ObjectPusher;
  /** Prove the invite to more members so objects can be fetched from them; returns those. */
  admitElsewhere(signal?: AbortSignal): Promise<string[]>;
  close(): Promise<void>;
}

/** Connect to the cluster of `inviteText`; throws ClientError. */
export async function connectCluster(
  inviteText: string,
  opts: ConnectOptions = {},
): Promise<ClusterClient> {
  let invite: Invite;
  try {
    invite = parseInvite(inviteText);
  } catch (e) {
    throw new ClientError("bad-invite", `bad invite: ${(e as Error).message}`);
  }
  if (invite.expiresAt !== null && invite.expiresAt <= Date.now()) {
    throw new ClientError("bad-invite", "bad invite: it has expired; ask a member for a new one");
  }
  const tmp = await Deno.makeTempDir({ prefix: "filesync-client-" });
  const allowed = new Set<string>();
  let host: Host | null = null;
  try {
    host = await createHost({
      identityPath: `${tmp}/identity.key`,
      listen: opts.listen ?? ["/ip4/0.0.0.0/udp/0/quic-v1"],
      isAllowedPeer: (peer) => allowed.has(peer),
      admission: { acceptStrangers: false },
      logger: Deno.env.get("FILESYNC_DEBUG") ? consoleLogger() : { warn: () => {} },
    });
    const joined = await joinCluster(host, invite, {
      protocol: CLIENT_PROTOCOL,
      signal: opts.signal,
    }).catch((e) => {
      throw clientErrorOf(e);
    });
    for (const m of joined.members) allowed.add(m.peerId);
    allowed.add(joined.serverPeer);
    const session = await SessionClient.open(host, joined.serverPeer, opts.signal);
    const h = host;
    const admitted = new Set([joined.serverPeer]);
    const bulk = new BulkDialer(h);
    return {
      host: h,
      invite,
      gateway: joined.serverPeer,
      session,
      members: joined.members,
      fetcher: new ObjectFetcher(h, { bulk }),
      pusher: new ObjectPusher(h, { bulk }),
      async admitElsewhere(signal?: AbortSignal): Promise<string[]> {
        await Promise.all(joined.members.map(async (m) => {
          if (admitted.has(m.peerId) || m.addrs.length === 0) return;
          try {
            await joinVia(h, invite, m.peerId, m.addrs, { protocol: CLIENT_PROTOCOL, signal });
            admitted.add(m.peerId);
          } catch {
            // That member is down or refuses: fetch from the others.
          }
        }));
        return [...admitted];
      },
      async close() {
        await session.close().catch(() => {});
        await h.stop().catch(() => {});
        await Deno.remove(tmp, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    await host?.stop().catch(() => {});
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw clientErrorOf(e);
  }
}

/** The ClientError a connection failure means. */
function clientErrorOf(e: unknown): Error {
  if (e instanceof ClientError) return e;
  if (e instanceof InviteError) return new ClientError("bad-invite", `bad invite: ${e.message}`);
  if (e instanceof JoinError) {
    if (e.code === "rejected" && /too many|try again/i.test(e.message)) {
      return new ClientError("unreachable", `the cluster is busy: ${e.message}`);
    }
    if (e.code === "rejected" || e.code === "secret-mismatch") {
      return new ClientError("bad-invite", `invite refused: ${e.message}`);
    }
    if (e.code === "timeout") return new ClientError("timeout", e.message);
    return new ClientError("unreachable", `cluster unreachable: ${e.message}`);
  }
  return e instanceof Error ? e : new Error(String(e));
}
