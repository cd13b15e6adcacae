/**
 * Invites: how a new node learns where a cluster is and how to prove it was invited.
 *
 * An invite string is `filesync:` + base64url(CBOR invite message), carrying the cluster id,
 * an invite id (public: it tells the server which invite is being used), the invite's secret
 * (proved by HMAC in the join handshake, never sent), an expiry, and the multiaddrs of one or
 * more members, each ending in /p2p/<peer id>: QUIC's TLS handshake checks that peer id, so
 * the invite authenticates the server to the joiner.
 */
import { Buffer } from "node:buffer";
import { multiaddr } from "@multiformats/multiaddr";
import { peerIdFromString } from "@libp2p/peer-id";
import { fromHex, toHex } from "../chunk/hash.ts";
import {
  INVITE_ID_LENGTH,
  inviteCodec,
  MAX_ADDR_LENGTH,
  MAX_CLUSTER_ID_LENGTH,
  MAX_INVITE_ADDRS,
  SECRET_LENGTH,
} from "./codec.ts";
import { InviteError, WireDecodeError } from "./errors.ts";

/** Text every invite string starts with. */
export const INVITE_PREFIX = "filesync:";

/** A parsed invite. */
export interface Invite {
  clusterId: string;
  /** Hex of the 16-byte invite id. */
  inviteId: string;
  /** The 32-byte secret. Treat as a password. */
  secret: Uint8Array;
  /** Unix ms after which the invite is refused; null = never expires. */
  expiresAt: number | null;
  /** Member multiaddrs, each with /p2p/<peer id>. */
  addrs: string[];
}

/** Options of createInvite. */
export interface CreateInviteOptions {
  clusterId: string;
  /** Addresses of the inviting member(s), each with /p2p/<peer id>. */
  addrs: string[];
  /** Lifetime in ms from `now`; omit for an invite that never expires. */
  ttlMs?: number;
  /** Reuse a secret (e.g. the cluster's); default: 32 fresh random bytes. */
  secret?: Uint8Array;
  /** Reuse an invite id; default: 16 fresh random bytes. */
  inviteId?: string;
  now?: number;
}

/** Make a new invite with a random id and (unless given) a random secret. */
export function createInvite(opts: CreateInviteOptions): Invite {
  const now = opts.now ?? Date.now();
  if (opts.ttlMs !== undefined && !(opts.ttlMs > 0)) {
    throw new InviteError("malformed", "invite lifetime must be positive");
  }
  const invite: Invite = {
    clusterId: opts.clusterId,
    inviteId: opts.inviteId ?? toHex(crypto.getRandomValues(new Uint8Array(INVITE_ID_LENGTH))),
    secret: opts.secret ?? crypto.getRandomValues(new Uint8Array(SECRET_LENGTH)),
    expiresAt: opts.ttlMs === undefined ? null : now + opts.ttlMs,
    addrs: [...opts.addrs],
  };
  validateInvite(invite);
  return invite;
}

/** The invite as a single copy-pasteable string. */
export function formatInvite(invite: Invite): string {
  validateInvite(invite);
  const payload = inviteCodec.encode({
    type: "invite",
    clusterId: invite.clusterId,
    inviteId: fromHex(invite.inviteId),
    secret: invite.secret,
    expiresAt: invite.expiresAt ?? 0,
    addrs: invite.addrs,
  });
  return INVITE_PREFIX + Buffer.from(payload).toString("base64url");
}

/**
 * Parse an invite string. Throws InviteError("malformed") naming what is wrong, or
 * InviteError("expired") if its expiry is at or before `now`.
 */
export function parseInvite(text: string, now: number = Date.now()): Invite {
  const s = text.trim();
  if (!s.startsWith(INVITE_PREFIX)) {
    throw new InviteError("malformed", `an invite starts with "${INVITE_PREFIX}"`);
  }
  const body = s.slice(INVITE_PREFIX.length);
  if (body.length === 0 || body.length > 16 * 1024 || !/^[A-Za-z0-9_-]+$/.test(body)) {
    throw new InviteError("malformed", "invite is not valid base64url text (was it cut short?)");
  }
  let msg;
  try {
    msg = inviteCodec.decode(new Uint8Array(Buffer.from(body, "base64url")));
  } catch (err) {
    if (err instanceof WireDecodeError) {
      throw new InviteError("malformed", `invite is damaged: ${err.message}`);
    }
    throw err;
  }
  const invite: Invite = {
    clusterId: msg.clusterId,
    inviteId: toHex(msg.inviteId),
    secret: msg.secret,
    expiresAt: msg.expiresAt === 0 ? null : msg.expiresAt,
    addrs: msg.addrs,
  };
  validateInvite(invite);
  if (invite.expiresAt !== null && invite.expiresAt <= now) {
    throw new InviteError(
      "expired",
      `invite expired at ${new Date(invite.expiresAt).toISOString()}; ask a member for a new one`,
    );
  }
  return invite;
}

/** The distinct peers named by an invite's addresses, with their addresses, in order. */
export function invitePeers(invite: Invite): { peerId: string; addrs: string[] }[] {
  const byPeer = new Map<string, string[]>();
  for (const a of invite.addrs) {
    const peer = peerInAddr(a);
    const list = byPeer.get(peer) ?? [];
    list.push(a);
    byPeer.set(peer, list);
  }
  return [...byPeer].map(([peerId, addrs]) => ({ peerId, addrs }));
}

function validateInvite(invite: Invite): void {
  if (
    typeof invite.clusterId !== "string" || invite.clusterId.length === 0 ||
    invite.clusterId.length > MAX_CLUSTER_ID_LENGTH
  ) {
    throw new InviteError("malformed", `cluster id must be 1..${MAX_CLUSTER_ID_LENGTH} characters`);
  }
  if (!/^[0-9a-f]{32}$/.test(invite.inviteId)) {
    throw new InviteError("malformed", "invite id must be 16 bytes of lower-case hex");
  }
  if (!(invite.secret instanceof Uint8Array) || invite.secret.length !== SECRET_LENGTH) {
    throw new InviteError("malformed", `invite secret must be ${SECRET_LENGTH} bytes`);
  }
  if (
    invite.expiresAt !== null && !(Number.isSafeInteger(invite.expiresAt) && invite.expiresAt > 0)
  ) {
    throw new InviteError("malformed", "invite expiry must be a positive Unix time in ms");
  }
  if (invite.addrs.length === 0 || invite.addrs.length > MAX_INVITE_ADDRS) {
    throw new InviteError("malformed", `an invite needs 1..${MAX_INVITE_ADDRS} addresses`);
  }
  for (const a of invite.addrs) {
    if (a.length > MAX_ADDR_LENGTH) throw new InviteError("malformed", `address too long: ${a}`);
    peerInAddr(a);
  }
}

/** The /p2p peer id at the end of an address; InviteError if absent or invalid. */
function peerInAddr(addr: string): string {
  let comps;
  try {
    comps = multiaddr(addr).getComponents();
  } catch (err) {
    throw new InviteError("malformed", `not a multiaddr: ${addr} (${(err as Error).message})`);
  }
  const last = comps[comps.length - 1];
  if (last?.name !== "p2p" || last.value === undefined) {
    throw new InviteError("malformed", `address ${addr} does not end in /p2p/<peer id>`);
  }
  if (comps.length < 2) {
    throw new InviteError("malformed", `address ${addr} has no transport part`);
  }
  try {
    peerIdFromString(last.value);
  } catch {
    throw new InviteError("malformed", `address ${addr} has an invalid peer id`);
  }
  return last.value;
}
