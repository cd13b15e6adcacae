/**
 * Invites that any member can check without shared state beyond the cluster secret.
 *
 * An invite id is 16 bytes: its expiry (ms since the epoch, 0 for never) as 8 big-endian
 * bytes, a flags byte (bit 0: single use) and 7 random bytes. The invite's secret is
 * HMAC-SHA256(cluster secret, "filesync invite" || id), so every member derives the same
 * secret from the id alone, and a joiner holding the invite proves knowledge of it over
 * /filesync/join/1 without it ever crossing the wire. A single-use invite is consumed through
 * Raft (the "use-invite" op), so two members cannot both admit with it.
 */
import { createHmac } from "node:crypto";
import { fromHex, toHex } from "../chunk/mod.ts";
import { createInvite, formatInvite, type InviteSecret } from "../net/mod.ts";

const ONCE_FLAG = 1;
const LABEL = new TextEncoder().encode("filesync invite");

/** What an invite id says about the invite. */
export interface InviteTerms {
  expiresAt: number | null;
  once: boolean;
}

/** A fresh invite id carrying its terms. */
export function newInviteId(terms: InviteTerms): string {
  const id = new Uint8Array(16);
  new DataView(id.buffer).setBigUint64(0, BigInt(terms.expiresAt ?? 0));
  id[8] = terms.once ? ONCE_FLAG : 0;
  id.set(crypto.getRandomValues(new Uint8Array(7)), 9);
  return toHex(id);
}

/** The terms encoded in an invite id, or null if the id is malformed. */
export function inviteTerms(inviteId: string): InviteTerms | null {
  let id: Uint8Array;
  try {
    id = fromHex(inviteId);
  } catch {
    return null;
  }
  if (id.length !== 16) return null;
  const expires = Number(new DataView(id.buffer).getBigUint64(0));
  return { expiresAt: expires === 0 ? null : expires, once: (id[8] & ONCE_FLAG) !== 0 };
}

/** The secret of an invite id under a cluster secret. */
export function inviteSecret(clusterSecret: Uint8Array, inviteId: string): Uint8Array {
  const mac = createHmac("sha256", clusterSecret).update(LABEL).update(fromHex(inviteId)).digest();
  return new Uint8Array(mac.buffer, mac.byteOffset, mac.byteLength).slice();
}

/** Server side: the secret and expiry of an invite id, or null if malformed. */
export function resolveInvite(clusterSecret: Uint8Array, inviteId: string): InviteSecret | null {
  const terms = inviteTerms(inviteId);
  if (!terms) return null;
  return { secret: inviteSecret(clusterSecret, inviteId), expiresAt: terms.expiresAt };
}

/** A new invite string for the cluster, naming the given member addresses. */
export function makeInvite(
  cluster: { clusterId: string; secret: Uint8Array },
  addrs: string[],
  opts: { ttlMs?: number; once?: boolean; now?: number } = {},
): string {
  const now = opts.now ?? Date.now();
  const expiresAt = opts.ttlMs === undefined ? null : now + opts.ttlMs;
  const inviteId = newInviteId({ expiresAt, once: opts.once ?? false });
  return formatInvite(createInvite({
    clusterId: cluster.clusterId,
    addrs,
    inviteId,
    secret: inviteSecret(cluster.secret, inviteId),
    ttlMs: opts.ttlMs,
    now,
  }));
}
