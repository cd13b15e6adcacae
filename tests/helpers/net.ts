/** Network helpers shared by the end-to-end tests. */
import assert from "node:assert/strict";
import { type Hash, sha256, toHex } from "../../src/chunk/hash.ts";
import {
  type AdmissionLimits,
  createHost,
  type Host,
  memoryLogger,
  type ObjectProvider,
  RAFT_PROTOCOL,
  raftCodec,
} from "../../src/net/mod.ts";
import { giveBuffer, takeBuffer } from "../../src/util/mod.ts";

/**
 * Whether a raft stream from `host` to `peer` is refused. The server resets such a stream as
 * soon as its protocol is negotiated; QUIC may then drop the negotiation reply too, so the
 * refusal shows either as a failed open or as a stream that ends without a byte.
 */
export async function refused(host: Host, peer: string): Promise<boolean> {
  let stream;
  try {
    stream = await host.openStream(peer, RAFT_PROTOCOL);
  } catch {
    return true;
  }
  try {
    stream.send(raftCodec.encodeFrame({ type: "batch", msgs: [new Uint8Array([1])] }));
  } catch {
    return true;
  }
  let bytes = 0;
  try {
    for await (const m of stream) bytes += m.byteLength;
  } catch {
    return true;
  }
  return bytes === 0;
}

export const LISTEN = ["/ip4/127.0.0.1/udp/0/quic-v1"];

export interface TestHost {
  host: Host;
  members: Set<string>;
  log: ReturnType<typeof memoryLogger>;
}

/** In-process hosts on 127.0.0.1 with their own member sets (each host always counts itself). */
export async function hosts(
  n: number,
  admission: Partial<AdmissionLimits> = {},
  options: { enableTcp?: boolean } = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "net-e2e-" });
  const made: TestHost[] = [];
  for (let i = 0; i < n; i++) {
    const members = new Set<string>();
    const log = memoryLogger();
    const host = await createHost({
      identityPath: `${dir}/${i}/.filesync/identity.key`,
      listen: LISTEN,
      isAllowedPeer: (p) => members.has(p),
      admission,
      logger: log,
      enableTcp: options.enableTcp,
    });
    members.add(host.peerId);
    made.push({ host, members, log });
  }
  return {
    list: made,
    /** Make every host a member of every other's set, and teach them each other's addresses. */
    async mesh(...group: TestHost[]) {
      for (const a of group) {
        for (const b of group) {
          a.members.add(b.host.peerId);
          if (a !== b) await a.host.rememberPeer(b.host.peerId, b.host.addrs());
        }
      }
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(made.map((h) => h.host.stop().catch(() => {})));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Poll a condition a bounded number of times (no wall-clock assertion). */
export async function eventually(
  what: string,
  cond: () => boolean | Promise<boolean>,
): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`never happened: ${what}`);
}

export function randomObjects(count: number, size = 4096): Map<string, Uint8Array> {
  const m = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    const data = crypto.getRandomValues(new Uint8Array(size + i));
    m.set(toHex(sha256(data)), data);
  }
  return m;
}

export function provider(
  store: Map<string, Uint8Array>,
  opts: {
    corrupt?: boolean;
    delayMs?: number;
    calls?: string[];
    /** Serve copies in pooled buffers, counting those the server gives back. */
    pooled?: { released: number };
  } = {},
): ObjectProvider {
  const pooled = opts.pooled;
  return {
    has: (h) => Promise.resolve(store.has(toHex(h))),
    ...(pooled
      ? {
        release: (bytes: Uint8Array) => {
          pooled.released++;
          giveBuffer(bytes);
        },
      }
      : {}),
    get: async (h: Hash) => {
      opts.calls?.push(toHex(h));
      if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
      const d = store.get(toHex(h));
      if (d === undefined) return null;
      if (pooled) {
        const copy = takeBuffer(d.length);
        copy.set(d);
        return copy;
      }
      if (!opts.corrupt) return d;
      const bad = d.slice();
      bad[0] ^= 0xff;
      return bad;
    },
  };
}

export const hashesOf = (m: Map<string, Uint8Array>) =>
  [...m.keys()].map((hex) => Uint8Array.from(hex.match(/../g)!.map((b) => parseInt(b, 16))));
