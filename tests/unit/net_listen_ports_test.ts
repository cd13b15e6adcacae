/** Listen ports kept across restarts: port 0 is pinned to the port bound, per family and transport. */
import assert from "node:assert/strict";
import { pinFreePorts } from "../../src/net/mod.ts";

Deno.test("listen ports: a port 0 is replaced by the port bound for its family and transport", () => {
  const bound = [
    "/ip4/127.0.0.1/udp/41234/quic-v1/p2p/12D3KooWGp8V7qqU5PkDycgvffEBfvSnytBkgTYbKGQvDTdSrmt8",
    "/ip4/127.0.0.1/tcp/40001/p2p/12D3KooWGp8V7qqU5PkDycgvffEBfvSnytBkgTYbKGQvDTdSrmt8",
    "/ip6/::1/udp/45678/quic-v1",
  ];
  assert.deepEqual(
    pinFreePorts(
      ["/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0", "/ip6/::/udp/0/quic-v1"],
      bound,
    ),
    ["/ip4/0.0.0.0/udp/41234/quic-v1", "/ip4/0.0.0.0/tcp/40001", "/ip6/::/udp/45678/quic-v1"],
  );
});

Deno.test("listen ports: nothing to pin without a port 0, or without a bound port for it", () => {
  assert.equal(
    pinFreePorts(["/ip4/0.0.0.0/udp/4001/quic-v1"], ["/ip4/127.0.0.1/udp/4001/quic-v1"]),
    null,
  );
  assert.equal(pinFreePorts(["/ip6/::/udp/0/quic-v1"], ["/ip4/127.0.0.1/udp/4001/quic-v1"]), null);
});
