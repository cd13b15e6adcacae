/** Join proofs: bound to every transcript field, the role and the secret. */
import assert from "node:assert/strict";
import { joinProof, type JoinTranscript, verifyJoinProof } from "../../src/net/join_proof.ts";

const secret = new Uint8Array(32).fill(7);
const t: JoinTranscript = {
  clusterId: "cluster",
  inviteId: new Uint8Array(16).fill(1),
  clientNonce: new Uint8Array(32).fill(2),
  serverNonce: new Uint8Array(32).fill(3),
  serverPeer: "12D3KooWserver",
  clientPeer: "12D3KooWclient",
};

Deno.test("a proof verifies for the same secret, role and transcript", () => {
  const p = joinProof(secret, "client", t);
  assert.equal(p.length, 32);
  assert.deepEqual(joinProof(secret, "client", { ...t }), p);
  assert.ok(verifyJoinProof(secret, "client", t, p));
});

Deno.test("a proof does not transfer to another role, secret or transcript", () => {
  const p = joinProof(secret, "client", t);
  assert.ok(!verifyJoinProof(secret, "server", t, p), "server proof must differ");
  assert.ok(!verifyJoinProof(new Uint8Array(32).fill(8), "client", t, p));
  const variants: Partial<JoinTranscript>[] = [
    { clusterId: "other" },
    { inviteId: new Uint8Array(16).fill(9) },
    { clientNonce: new Uint8Array(32).fill(9) },
    { serverNonce: new Uint8Array(32).fill(9) },
    { serverPeer: "12D3KooWmallory" },
    { clientPeer: "12D3KooWmallory" },
    // Moving bytes between adjacent fields must not produce the same input to the MAC.
    { serverPeer: "12D3KooWserver1", clientPeer: "2D3KooWclient" },
  ];
  for (const v of variants) {
    assert.ok(!verifyJoinProof(secret, "client", { ...t, ...v }, p), JSON.stringify(v));
  }
  assert.ok(!verifyJoinProof(secret, "client", t, p.subarray(0, 31)));
  const flipped = p.slice();
  flipped[0] ^= 1;
  assert.ok(!verifyJoinProof(secret, "client", t, flipped));
});
