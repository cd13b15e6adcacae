/**
 * Bulk connections (src/net/bulk.ts) end to end with in-process hosts on 127.0.0.1: objects go
 * over TLS on TCP when the server offers it and arrive verified; the certificate is pinned; a
 * connection needs a ticket of a current member or client; garbage on the port harms nothing;
 * and a fetch falls back to libp2p whenever no bulk connection can be had.
 *
 * Sanitizers are off for the same reason as in net_hosts_test.ts (libp2p's leftover timers).
 */
import assert from "node:assert/strict";
import { toHex } from "../../src/chunk/hash.ts";
import {
  BULK_PROTOCOL,
  BULK_TICKET_LENGTH,
  bulkCodec,
  BulkDialer,
  type BulkMessage,
  BulkServer,
  FramedStream,
  makeTlsIdentity,
  ObjectFetcher,
  ObjectPusher,
  type ObjectServerOptions,
  serveObjects,
} from "../../src/net/mod.ts";
import { hashesOf, hosts, provider, randomObjects, type TestHost } from "../helpers/net.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const BULK_NAME = "filesync.invalid";

/** `server` serves `store` over libp2p and over a bulk listener on 127.0.0.1 (`options` to both). */
async function serveBoth(
  server: TestHost,
  store: Map<string, Uint8Array>,
  options?: ObjectServerOptions,
): Promise<BulkServer> {
  const handler = await serveObjects(server.host, provider(store), options);
  return await BulkServer.start(server.host, "127.0.0.1", handler);
}

/** Ask `server` for a bulk offer over libp2p, as `client` (what BulkDialer does first). */
async function askOffer(client: TestHost, server: TestHost): Promise<BulkMessage> {
  const stream = await client.host.openStream(server.host.peerId, BULK_PROTOCOL);
  const fs = new FramedStream<BulkMessage, BulkMessage>(stream, bulkCodec, bulkCodec);
  await fs.write({ type: "offerRequest", version: 1 });
  const reply = await fs.read();
  await fs.close().catch(() => {});
  assert.ok(reply !== null, "an answer to the offer request");
  return reply;
}

/** Dial a bulk port by hand, trusting `cert`, send `ticket`; the server's first reply byte. */
async function presentTicket(
  port: number,
  cert: string,
  ticket: Uint8Array,
): Promise<number | null> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  const conn = await Deno.startTls(tcp, { hostname: BULK_NAME, caCerts: [cert] });
  try {
    await conn.write(ticket);
    const buf = new Uint8Array(1);
    const n = await conn.read(buf).catch(() => null);
    return n === null ? null : buf[0];
  } finally {
    try {
      conn.close();
    } catch { /* closed by the server */ }
  }
}

async function fetchAll(
  fetcher: ObjectFetcher,
  store: Map<string, Uint8Array>,
  peers: string[],
): Promise<number> {
  const got = new Map<string, Uint8Array>();
  const r = await fetcher.fetch(hashesOf(store), peers, (hash, bytes) => {
    got.set(toHex(hash), bytes.slice());
  }, { window: 8, batch: 4 });
  assert.deepEqual(r.missing, []);
  assert.deepEqual(r.badPeers, []);
  for (const [hex, data] of store) assert.deepEqual(got.get(hex), data, `object ${hex}`);
  return r.fetched;
}

Deno.test({
  name: "bulk: objects come over a bulk connection, verified, when the server offers one",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [client, server] = h.list;
    await h.mesh(client, server);
    const store = randomObjects(200, 30_000);
    const bulk = await serveBoth(server, store);
    const fetcher = new ObjectFetcher(client.host, { bulk: new BulkDialer(client.host) });
    try {
      assert.equal(await fetchAll(fetcher, store, [server.host.peerId]), 200);
      assert.ok(bulk.accepted > 0, "the fetch used a bulk connection");
    } finally {
      fetcher.close();
      await bulk.close();
    }
  },
});

Deno.test({
  name: "bulk: the certificate is pinned; a handshake trusting any other fails",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [client, server] = h.list;
    await h.mesh(client, server);
    const bulk = await serveBoth(server, new Map());
    try {
      const offer = await askOffer(client, server);
      assert.equal(offer.type, "offer");
      if (offer.type !== "offer") return;
      // The right certificate and ticket: accepted.
      assert.equal(await presentTicket(offer.port, offer.cert, offer.ticket), 1);
      // Someone else's certificate (a node pretending to be this one): the handshake fails.
      const other = await makeTlsIdentity();
      await assert.rejects(presentTicket(offer.port, other.cert, offer.ticket));
    } finally {
      await bulk.close();
    }
  },
});

Deno.test({
  name: "bulk: a connection needs the ticket of a current member; strangers get no offer",
  ...opts,
  async fn() {
    await using h = await hosts(3);
    const [client, server, stranger] = h.list;
    await h.mesh(client, server);
    const bulk = await serveBoth(server, randomObjects(10));
    try {
      const offer = await askOffer(client, server);
      if (offer.type !== "offer") assert.fail("no offer for a member");
      // A made-up ticket: the connection is closed without the accepting byte.
      const forged = crypto.getRandomValues(new Uint8Array(BULK_TICKET_LENGTH));
      assert.equal(await presentTicket(offer.port, offer.cert, forged), null);
      assert.ok(server.log.lines.some((l) => l.includes("unknown ticket")));
      // A peer that is not a member cannot even ask (libp2p refuses the protocol).
      await stranger.host.rememberPeer(server.host.peerId, server.host.addrs());
      await assert.rejects(askOffer(stranger, server));
      // A member removed from the cluster: its ticket admits it no more.
      server.members.delete(client.host.peerId);
      assert.equal(await presentTicket(offer.port, offer.cert, offer.ticket), null);
      assert.equal(bulk.accepted, 0);
    } finally {
      await bulk.close();
    }
  },
});

Deno.test({
  name: "bulk: garbage on the bulk port harms nothing; the next fetch still uses it",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [client, server] = h.list;
    await h.mesh(client, server);
    const store = randomObjects(50);
    const bulk = await serveBoth(server, store);
    const fetcher = new ObjectFetcher(client.host, { bulk: new BulkDialer(client.host) });
    try {
      // Plain bytes where a TLS handshake belongs, and a connection that says nothing.
      const junk = await Deno.connect({ hostname: "127.0.0.1", port: bulk.port });
      await junk.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n".repeat(100)));
      const silent = await Deno.connect({ hostname: "127.0.0.1", port: bulk.port });
      assert.equal(await fetchAll(fetcher, store, [server.host.peerId]), 50);
      assert.ok(bulk.accepted > 0);
      junk.close();
      silent.close();
    } finally {
      fetcher.close();
      await bulk.close();
    }
  },
});

Deno.test({
  name: "bulk: with no bulk listener to reach, objects come over libp2p",
  ...opts,
  async fn() {
    await using h = await hosts(3);
    const [client, closed, plain] = h.list;
    await h.mesh(client, closed, plain);
    const store = randomObjects(60);
    // One server's bulk listener is gone after it made its offer; the other never had one.
    const gone = await serveBoth(closed, store);
    const dialer = new BulkDialer(client.host);
    const first = await dialer.open(closed.host.peerId);
    assert.ok(first !== null, "offer taken while listening");
    first.abort(new Error("only the offer was wanted"));
    await gone.close();
    await serveObjects(plain.host, provider(store));
    const fetcher = new ObjectFetcher(client.host, { bulk: dialer });
    try {
      assert.equal(await fetchAll(fetcher, store, [closed.host.peerId]), 60);
      assert.equal(await fetchAll(fetcher, store, [plain.host.peerId]), 60);
    } finally {
      fetcher.close();
    }
  },
});

Deno.test({
  name: "bulk: a peer that could not be reached yet is offered bulk as soon as it can be",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [client, server] = h.list;
    // Members, but the client does not know the server's addresses yet (a member that joined
    // a moment ago): no offer can be asked for.
    client.members.add(server.host.peerId);
    server.members.add(client.host.peerId);
    const store = randomObjects(20, 30_000);
    const bulk = await serveBoth(server, store);
    const dialer = new BulkDialer(client.host);
    try {
      assert.equal(await dialer.open(server.host.peerId), null, "unreachable: no connection");
      await client.host.rememberPeer(server.host.peerId, server.host.addrs());
      // Within the 10 s a failed bulk dial waits: this was no failure of the bulk lane.
      let conn = null;
      for (let i = 0; i < 40 && conn === null; i++) {
        conn = await dialer.open(server.host.peerId);
        if (conn === null) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(conn !== null, "a bulk connection once the peer can be reached");
      conn.abort(new Error("only the connection was wanted"));
      assert.ok(bulk.accepted > 0);
    } finally {
      await bulk.close();
    }
  },
});

Deno.test({
  name: "bulk: a push goes over a bulk connection and ends durable on the receiver",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [pusher, receiver] = h.list;
    await h.mesh(pusher, receiver);
    const held = new Map<string, Uint8Array>();
    const flushed = new Set<string>();
    const bulk = await serveBoth(receiver, held, {
      receiver: {
        store: (hash, bytes) => {
          held.set(toHex(hash), bytes.slice());
          return Promise.resolve();
        },
        flush: (hashes) => {
          for (const hash of hashes) flushed.add(toHex(hash));
          return Promise.resolve();
        },
      },
    });
    try {
      const store = randomObjects(80, 10_000);
      const push = new ObjectPusher(pusher.host, { bulk: new BulkDialer(pusher.host) });
      const r = await push.push(
        receiver.host.peerId,
        hashesOf(store),
        (hash) => Promise.resolve(store.get(toHex(hash))!),
      );
      assert.equal(r.sent, 80);
      assert.equal(flushed.size, 80, "every pushed object was flushed");
      for (const [hex, data] of store) assert.deepEqual(held.get(hex), data);
      assert.equal(bulk.accepted, 1, "the push used a bulk connection");
    } finally {
      await bulk.close();
    }
  },
});
