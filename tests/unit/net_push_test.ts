/**
 * Pushing objects on /filesync/objects/1 between two in-process hosts on 127.0.0.1: objects
 * arrive verified and are flushed before push() resolves, held objects are not sent again, a
 * slow receiver slows the pusher rather than getting the stream reset, a corrupt store is
 * refused before the receiver sees it, and every failure (refusal, failing flush, local read,
 * timeout, abort) rejects with a PushError naming the peer.
 *
 * libp2p leaves short timers behind after stop, so the op and resource sanitizers are off (as
 * in tests/e2e/net_hosts_test.ts); every host is stopped when its test ends.
 */
import assert from "node:assert/strict";
import { type Hash, sha256, toHex } from "../../src/chunk/hash.ts";
import { encodeStoreFrameHeader } from "../../src/net/codec.ts";
import {
  createHost,
  FramedStream,
  type Host,
  memoryLogger,
  ObjectPusher,
  type ObjectReceiver,
  OBJECTS_PROTOCOL,
  objectsCodec,
  type ObjectServerOptions,
  PushError,
  serveObjects,
} from "../../src/net/mod.ts";

const LISTEN = ["/ip4/127.0.0.1/udp/0/quic-v1"];
const opts = { sanitizeOps: false, sanitizeResources: false };

interface TestHost {
  host: Host;
  log: ReturnType<typeof memoryLogger>;
}

/** Two hosts that are members of each other's cluster and know each other's addresses. */
async function pair() {
  const dir = await Deno.makeTempDir({ prefix: "net-push-" });
  const members = new Set<string>();
  const made: TestHost[] = [];
  for (let i = 0; i < 2; i++) {
    const log = memoryLogger();
    const host = await createHost({
      identityPath: `${dir}/${i}/identity.key`,
      listen: LISTEN,
      isAllowedPeer: (p) => members.has(p),
      logger: log,
    });
    members.add(host.peerId);
    made.push({ host, log });
  }
  const [client, server] = made;
  await client.host.rememberPeer(server.host.peerId, server.host.addrs());
  await server.host.rememberPeer(client.host.peerId, client.host.addrs());
  return {
    client,
    server,
    async [Symbol.asyncDispose]() {
      await Promise.all(made.map((h) => h.host.stop().catch(() => {})));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** An in-memory receiver that records the order of what happens to it. */
class MemoryReceiver implements ObjectReceiver {
  /** Stored objects, durable or not. */
  readonly objects = new Map<string, Uint8Array>();
  /** Objects made durable by a flush. */
  readonly durable = new Set<string>();
  /** `store <hex>`, `flush start`, `flush end`, in order. */
  readonly events: string[] = [];
  /** Optional misbehaviour, set by a test. */
  storeDelayMs = 0;
  flushGate: Promise<void> | null = null;
  failFlush: Error | null = null;
  failStoreOf: string | null = null;

  async store(hash: Hash, bytes: Uint8Array): Promise<void> {
    const hex = toHex(hash);
    if (hex === this.failStoreOf) throw new Error("no space left on device");
    if (this.storeDelayMs > 0) await new Promise((r) => setTimeout(r, this.storeDelayMs));
    this.objects.set(hex, bytes.slice());
    this.events.push(`store ${hex}`);
  }

  async flush(): Promise<void> {
    this.events.push("flush start");
    await (this.flushGate ?? Promise.resolve());
    if (this.failFlush !== null) throw this.failFlush;
    await new Promise((r) => setTimeout(r, 1)); // an fsync takes a while
    for (const hex of this.objects.keys()) this.durable.add(hex);
    this.events.push("flush end");
  }

  /** The provider side: what `have` reports (stored, durable or not). */
  provider() {
    return {
      has: (h: Hash) => Promise.resolve(this.objects.has(toHex(h))),
      get: (h: Hash) => Promise.resolve(this.objects.get(toHex(h)) ?? null),
    };
  }
}

/** Serve objects on `server` into a fresh MemoryReceiver (or with no receiver at all). */
async function serve(server: TestHost, withReceiver = true, extra: ObjectServerOptions = {}) {
  const receiver = new MemoryReceiver();
  await serveObjects(server.host, receiver.provider(), {
    ...extra,
    receiver: withReceiver ? receiver : undefined,
  });
  return receiver;
}

/**
 * Distinct random objects with the given sizes, keyed by hex hash. Tiny ones can come out
 * equal (one byte has 256 values), so a repeat is drawn again, a bounded number of times.
 */
function objects(sizes: number[]): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const n of sizes) {
    for (let attempt = 0; attempt < 1000; attempt++) {
      const data = new Uint8Array(n);
      for (let o = 0; o < n; o += 65536) crypto.getRandomValues(data.subarray(o, o + 65536));
      const hex = toHex(sha256(data));
      if (out.has(hex)) continue;
      out.set(hex, data);
      break;
    }
  }
  assert.equal(out.size, sizes.length, "too many objects of one tiny size to be distinct");
  return out;
}

const hashesOf = (m: Map<string, Uint8Array>) => [...m.values()].map((d) => sha256(d));

/** A reader over a map, counting reads. */
function reader(store: Map<string, Uint8Array>, reads: string[] = []) {
  return (h: Hash) => {
    reads.push(toHex(h));
    const d = store.get(toHex(h));
    return d === undefined ? Promise.reject(new Error("not here")) : Promise.resolve(d);
  };
}

/** Assert that `p` rejects with a PushError of `code` whose message matches every pattern. */
async function rejectsWith(p: Promise<unknown>, code: PushError["code"], ...res: RegExp[]) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof PushError, `expected a PushError, got ${err}`);
    assert.equal(err.code, code, err.message);
    for (const re of res) assert.match(err.message, re);
    return true;
  });
}

/** Poll a condition a bounded number of times (no wall-clock assertion). */
async function eventually(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`never happened: ${what}`);
}

/** Sizes from 1 B to 256 KiB, spread evenly on a log scale (so most objects are small). */
function mixedSizes(count: number): number[] {
  const max = 256 * 1024;
  return Array.from({ length: count }, (_, i) => {
    if (i === 0) return 1;
    if (i === 1) return max;
    return Math.max(1, Math.round(Math.exp(Math.random() * Math.log(max))));
  });
}

Deno.test({
  name: "push: 200 objects of mixed sizes arrive intact and are flushed before push resolves",
  ...opts,
  async fn() {
    await using p = await pair();
    const receiver = await serve(p.server);
    const store = objects(mixedSizes(200));
    const hashes = hashesOf(store);
    const reads: string[] = [];
    const pusher = new ObjectPusher(p.client.host);
    // Duplicates are sent once.
    const result = await pusher.push(
      p.server.host.peerId,
      [...hashes, hashes[0], hashes[7]],
      reader(store, reads),
    );
    // Everything below was true at the moment push() resolved: nothing awaited in between.
    const events = [...receiver.events];
    const durable = new Set(receiver.durable);

    assert.deepEqual(result, {
      sent: 200,
      bytes: [...store.values()].reduce((n, d) => n + d.length, 0),
      alreadyHeld: 0,
    });
    assert.equal(reads.length, 200, "each object read once");
    assert.equal(receiver.objects.size, 200);
    for (const [hex, data] of store) assert.deepEqual(receiver.objects.get(hex), data, hex);
    // Stored in the order pushed, then one flush, finished before push() resolved.
    assert.deepEqual(events, [
      ...hashes.map((h) => `store ${toHex(h)}`),
      "flush start",
      "flush end",
    ]);
    assert.equal(durable.size, 200, "every object durable when push() resolved");
    assert.deepEqual(p.server.log.lines, []);

    // Again: the peer holds them all, so none is read or sent; it is still asked to flush.
    const again = await pusher.push(p.server.host.peerId, hashes, reader(store, reads));
    assert.deepEqual(again, { sent: 0, bytes: 0, alreadyHeld: 200 });
    assert.equal(reads.length, 200, "nothing read the second time");
    assert.deepEqual(receiver.events.slice(events.length), ["flush start", "flush end"]);
    // Nothing to push at all: the peer is not even contacted.
    assert.deepEqual(await pusher.push(p.server.host.peerId, [], reader(store)), {
      sent: 0,
      bytes: 0,
      alreadyHeld: 0,
    });
  },
});

Deno.test({
  name: "push: a slow receiver holds the pusher back instead of the stream being reset",
  ...opts,
  async fn() {
    await using p = await pair();
    const receiver = await serve(p.server);
    // 12 MiB through a receiver slower than loopback: without the window of unanswered
    // stores the server would buffer past libp2p's limit and the stream would be reset.
    receiver.storeDelayMs = 2;
    const store = objects(Array.from({ length: 48 }, () => 256 * 1024));
    const pusher = new ObjectPusher(p.client.host);
    const r = await pusher.push(p.server.host.peerId, hashesOf(store), reader(store));
    assert.equal(r.sent, 48);
    // A window smaller than one object still moves, one object at a time.
    const more = objects([300_000, 5, 200_000]);
    const r2 = await pusher.push(p.server.host.peerId, hashesOf(more), reader(more), {
      windowBytes: 1024,
      readAhead: 1,
    });
    assert.equal(r2.sent, 3);
    for (const [hex, data] of [...store, ...more]) {
      assert.deepEqual(receiver.objects.get(hex), data);
      assert.ok(receiver.durable.has(hex));
    }
    assert.deepEqual(p.server.log.lines, []);
  },
});

Deno.test({
  name: "push: a store whose bytes do not match its hash resets the stream, nothing is kept",
  ...opts,
  async fn() {
    await using p = await pair();
    const receiver = await serve(p.server);
    const [good, other, lie] = [...objects([1000, 2000, 3000]).values()];
    const stream = await p.client.host.openStream(p.server.host.peerId, OBJECTS_PROTOCOL);
    const fs = new FramedStream(stream, objectsCodec, objectsCodec);
    const guard = AbortSignal.timeout(30_000); // liveness guard only: a hang fails, not slowness
    await fs.writeParts([encodeStoreFrameHeader(sha256(good), good), good]);
    assert.deepEqual(await fs.read(guard), { type: "stored", count: 1 });
    // `lie` sent under the hash of `other`.
    await fs.writeParts([encodeStoreFrameHeader(sha256(other), lie), lie]);
    // The server resets its side: to us that is the end of the stream (or a reset), with no
    // answer to the corrupt store.
    const answer = await fs.read(guard).catch(() => null);
    assert.equal(answer, null, `no answer to a corrupt store, got ${answer?.type}`);
    await eventually(
      "the server dropped the stream",
      () => p.server.host.connections().every((c) => c.streams === 0),
    );
    fs.abort(new Error("test done"));
    assert.deepEqual([...receiver.objects.keys()], [toHex(sha256(good))]);
    assert.ok(!receiver.objects.has(toHex(sha256(lie))));
    await eventually("server logged it", () => p.server.log.lines.length > 0);
    const line = p.server.log.lines.find((l) => l.includes("corrupt pushed object"));
    assert.ok(line !== undefined, p.server.log.lines.join("\n"));
    assert.ok(line.includes(p.client.host.peerId), "the log names the peer");
    assert.ok(line.includes(toHex(sha256(other))), "and the object");
    // The server still serves this client on a new stream.
    const pusher = new ObjectPusher(p.client.host);
    const ok = objects([10]);
    assert.equal((await pusher.push(p.server.host.peerId, hashesOf(ok), reader(ok))).sent, 1);
  },
});

Deno.test({
  name: "push: a failing flush or store, or a node taking no pushes, rejects with the reason",
  ...opts,
  async fn() {
    await using p = await pair();
    const receiver = await serve(p.server);
    const peer = p.server.host.peerId;
    const pusher = new ObjectPusher(p.client.host);
    const store = objects([100, 200, 300]);
    const hashes = hashesOf(store);

    receiver.failFlush = new Error("fsync: input/output error");
    const failing = pusher.push(peer, hashes, reader(store));
    await rejectsWith(failing, "refused", new RegExp(peer), /fsync: input\/output error/);
    assert.ok(!receiver.events.includes("flush end"));
    const logged = p.server.log.lines.find((l) => /fsync/.test(l));
    assert.ok(logged?.includes(p.client.host.peerId), p.server.log.lines.join("\n"));

    receiver.failFlush = null;
    const more = objects([400, 500]);
    receiver.failStoreOf = toHex(hashesOf(more)[1]);
    await rejectsWith(
      pusher.push(peer, hashesOf(more), reader(more)),
      "refused",
      new RegExp(peer),
      /no space left on device/,
      new RegExp(receiver.failStoreOf),
    );
    assert.ok(!receiver.objects.has(receiver.failStoreOf));

    await using q = await pair();
    await serve(q.server, false);
    const none = new ObjectPusher(q.client.host);
    await rejectsWith(
      none.push(q.server.host.peerId, hashes, reader(store)),
      "refused",
      new RegExp(q.server.host.peerId),
      /takes no pushed objects/,
    );
    const line = q.server.log.lines.find((l) => l.includes("takes no pushed objects"));
    assert.ok(line?.includes(q.client.host.peerId), q.server.log.lines.join("\n"));
  },
});

Deno.test({
  name: "push: a bad local object, a flush that never ends, and an abort reject clearly",
  ...opts,
  async fn() {
    await using p = await pair();
    const receiver = await serve(p.server);
    const peer = p.server.host.peerId;
    const pusher = new ObjectPusher(p.client.host);
    const store = objects([100, 200, 300]);
    const hashes = hashesOf(store);

    // Local problems are named as such, with the object.
    const missing = sha256(new Uint8Array([9]));
    await rejectsWith(
      pusher.push(peer, [...hashes, missing], reader(store)),
      "read",
      new RegExp(toHex(missing)),
      /not here/,
    );
    const damaged = (h: Hash) => Promise.resolve(store.get(toHex(h))!.slice().fill(1));
    await rejectsWith(pusher.push(peer, hashes, damaged), "read", /do not match the hash/);

    // A peer whose flush hangs: the push times out, or is aborted, instead of hanging too.
    let release = () => {};
    receiver.flushGate = new Promise<void>((r) => release = r);
    try {
      await rejectsWith(
        pusher.push(peer, hashes, reader(store), { flushTimeoutMs: 300 }),
        "timeout",
        /confirmation of the flush/,
        new RegExp(peer),
      );
      const abort = new AbortController();
      const flushes = receiver.events.filter((e) => e === "flush start").length;
      const pushing = pusher.push(peer, hashes, reader(store), { signal: abort.signal });
      await eventually(
        "flush requested",
        () => receiver.events.filter((e) => e === "flush start").length > flushes,
      );
      abort.abort(new Error("shutting down"));
      await rejectsWith(pushing, "aborted", /shutting down/, new RegExp(peer));
    } finally {
      release();
    }
    // Once the peer recovers, pushing works again.
    receiver.flushGate = null;
    const r = await pusher.push(peer, hashes, reader(store));
    assert.equal(r.sent + r.alreadyHeld, 3);
  },
});
