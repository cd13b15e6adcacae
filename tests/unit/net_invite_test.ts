/** Invite strings: round trip, and a clear InviteError for every way one can be wrong. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  createInvite,
  formatInvite,
  INVITE_PREFIX,
  InviteError,
  parseInvite,
} from "../../src/net/mod.ts";
import { invitePeers } from "../../src/net/invite.ts";
import { inviteCodec } from "../../src/net/codec.ts";

const PEER_A = "12D3KooWQKRad9DtHDm2nJdvUm14vYE6tSenyh482NqHnX9qpvQp";
const PEER_B = "12D3KooWSZoNqJBq5x9DLAnSujtjqTvMFVtjbXAxdrmLamGJ8hmD";
const ADDRS = [
  `/ip4/127.0.0.1/udp/4001/quic-v1/p2p/${PEER_A}`,
  `/ip4/10.0.0.2/udp/4001/quic-v1/p2p/${PEER_A}`,
  `/ip4/10.0.0.3/tcp/4001/p2p/${PEER_B}`,
];

function inviteError(fn: () => unknown, code: InviteError["code"], re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InviteError, `expected InviteError, got ${err}`);
    assert.equal(err.code, code);
    assert.match(err.message, re);
    return true;
  });
}

Deno.test("an invite survives formatting and parsing", () => {
  const inv = createInvite({ clusterId: "cluster-1", addrs: ADDRS, ttlMs: 3_600_000, now: 1_000 });
  assert.equal(inv.expiresAt, 3_601_000);
  assert.match(inv.inviteId, /^[0-9a-f]{32}$/);
  assert.equal(inv.secret.length, 32);
  const text = formatInvite(inv);
  assert.ok(text.startsWith(INVITE_PREFIX));
  assert.match(text.slice(INVITE_PREFIX.length), /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(parseInvite(`  ${text}\n`, 2_000), inv);
  assert.deepEqual(invitePeers(inv), [
    { peerId: PEER_A, addrs: ADDRS.slice(0, 2) },
    { peerId: PEER_B, addrs: ADDRS.slice(2) },
  ]);
});

Deno.test("fresh invites have distinct ids and secrets; a never-expiring one has no expiry", () => {
  const a = createInvite({ clusterId: "c", addrs: ADDRS.slice(0, 1) });
  const b = createInvite({ clusterId: "c", addrs: ADDRS.slice(0, 1) });
  assert.notEqual(a.inviteId, b.inviteId);
  assert.notDeepEqual(a.secret, b.secret);
  assert.equal(a.expiresAt, null);
  assert.equal(parseInvite(formatInvite(a), Number.MAX_SAFE_INTEGER).expiresAt, null);
});

Deno.test("an expired invite is refused as expired", () => {
  const inv = createInvite({ clusterId: "c", addrs: ADDRS, ttlMs: 1000, now: 5_000 });
  const text = formatInvite(inv);
  assert.equal(parseInvite(text, 5_999).expiresAt, 6_000);
  inviteError(() => parseInvite(text, 6_000), "expired", /expired at 1970-01-01T00:00:06/);
});

Deno.test("malformed invites are refused with a reason", () => {
  const good = formatInvite(createInvite({ clusterId: "c", addrs: ADDRS }));
  inviteError(() => parseInvite(""), "malformed", /starts with "filesync:"/);
  inviteError(() => parseInvite("http://example.com"), "malformed", /starts with/);
  inviteError(() => parseInvite(INVITE_PREFIX), "malformed", /base64url/);
  inviteError(() => parseInvite(`${good}!`), "malformed", /base64url/);
  inviteError(() => parseInvite(good.slice(0, good.length - 10)), "malformed", /damaged/);
  const payload = (addrs: string[]) =>
    INVITE_PREFIX + Buffer.from(inviteCodec.encode({
      type: "invite",
      clusterId: "c",
      inviteId: new Uint8Array(16),
      secret: new Uint8Array(32),
      expiresAt: 0,
      addrs,
    })).toString("base64url");
  inviteError(() => parseInvite(payload([])), "malformed", /1\.\.32 addresses/);
  inviteError(
    () => parseInvite(payload(["/ip4/127.0.0.1/udp/1/quic-v1"])),
    "malformed",
    /does not end in \/p2p/,
  );
  inviteError(() => parseInvite(payload(["not a multiaddr"])), "malformed", /not a multiaddr/);
  inviteError(() => parseInvite(payload([`/p2p/${PEER_A}`])), "malformed", /no transport part/);
  inviteError(
    () => parseInvite(payload(["/ip4/127.0.0.1/udp/1/quic-v1/p2p/QmNotAPeerIdAtAll"])),
    "malformed",
    /invalid peer id|not a multiaddr/,
  );
  inviteError(
    () => createInvite({ clusterId: "", addrs: ADDRS }),
    "malformed",
    /cluster id/,
  );
  inviteError(
    () => createInvite({ clusterId: "c", addrs: ADDRS, ttlMs: 0 }),
    "malformed",
    /lifetime/,
  );
});
