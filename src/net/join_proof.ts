/**
 * Proof of knowledge of an invite secret, for the join handshake. Each side proves it knows
 * the secret by an HMAC-SHA256 keyed with it, over both sides' fresh nonces, both peer ids
 * (as authenticated by the transport), the cluster id and the invite id, with a role label.
 * The secret never crosses the wire; the nonces make every proof single-use; the peer ids
 * bind the proof to this connection (a relaying man-in-the-middle has a different peer id);
 * the role label stops a server's proof being replayed as a client's.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** Everything both sides know about one handshake, apart from the secret. */
export interface JoinTranscript {
  clusterId: string;
  inviteId: Uint8Array;
  clientNonce: Uint8Array;
  serverNonce: Uint8Array;
  serverPeer: string;
  clientPeer: string;
}

const LABEL = new TextEncoder().encode("filesync/join/1 proof");
const enc = new TextEncoder();

/** The proof that `role` knows `secret`, for this transcript. */
export function joinProof(
  secret: Uint8Array,
  role: "server" | "client",
  t: JoinTranscript,
): Uint8Array {
  const mac = createHmac("sha256", secret);
  // Every variable-length field is length-prefixed so no two transcripts serialize alike.
  const field = (b: Uint8Array) => {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, b.length);
    mac.update(len);
    mac.update(b);
  };
  field(LABEL);
  field(enc.encode(role));
  field(enc.encode(t.clusterId));
  field(t.inviteId);
  field(t.clientNonce);
  field(t.serverNonce);
  field(enc.encode(t.serverPeer));
  field(enc.encode(t.clientPeer));
  const d = mac.digest();
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice();
}

/** Constant-time check of a received proof. */
export function verifyJoinProof(
  secret: Uint8Array,
  role: "server" | "client",
  t: JoinTranscript,
  proof: Uint8Array,
): boolean {
  const expected = joinProof(secret, role, t);
  return proof.length === expected.length && timingSafeEqual(proof, expected);
}
