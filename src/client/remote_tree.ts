/** Read one committed version of the cluster's tree through a client session, page by page. */
import { SessionError } from "../net/mod.ts";
import type { ClusterClient } from "./connect.ts";
import { ClientError } from "./connect.ts";
import { sleep } from "./time.ts";
import {
  decodeTreePage,
  encodeTreeRequest,
  TREE_METHOD,
  TREE_PAGE,
  type TreeEntry,
} from "./wire.ts";

/** One version of the tree under a prefix. */
export interface RemoteTree {
  version: number;
  records: TreeEntry[];
}

/**
 * The live entries at and below `prefix` as of `at` ("" = the latest committed). Every page
 * after the first asks for the version the first one named, so the listing is consistent.
 */
export async function readRemoteTree(
  client: ClusterClient,
  prefix: string,
  at: string,
  signal?: AbortSignal,
): Promise<RemoteTree> {
  const records: TreeEntry[] = [];
  let version = -1;
  let total = Infinity;
  while (records.length < total) {
    const body = encodeTreeRequest({
      prefix,
      at: version < 0 ? at : String(version),
      offset: records.length,
      limit: TREE_PAGE,
    });
    // No leader right now (an election): wait for one until the caller's deadline.
    const page = decodeTreePage(
      await withQuorumRetry(signal, () => client.session.call(TREE_METHOD, body, signal), {
        pauseMs: 500,
      }),
    );
    if (version >= 0 && page.version !== version) {
      throw new ClientError("rejected", "the gateway changed versions between pages");
    }
    version = page.version;
    total = page.total;
    if (page.records.length === 0) break;
    records.push(...page.records);
  }
  if (records.length !== total) {
    // A pull deletes what the listing lacks: never act on a short one.
    throw new ClientError("corrupt", `the gateway listed ${records.length} of ${total} entries`);
  }
  return { version, records };
}

/** The ClientError a failed session call means. */
export function sessionFailure(e: unknown): Error {
  if (e instanceof ClientError) return e;
  if (e instanceof SessionError) {
    if (e.code === "no-quorum") return new ClientError("no-quorum", `no quorum: ${e.message}`);
    if (e.code === "conflict") return new ClientError("conflict", e.message);
    if (e.code === "unknown-outcome") return new ClientError("unknown-outcome", e.message);
    if (e.code === "closed") return new ClientError("unreachable", e.message);
    return new ClientError("rejected", e.message);
  }
  if (e instanceof DOMException && e.name === "TimeoutError") {
    return new ClientError("timeout", e.message);
  }
  return e instanceof Error ? e : new Error(String(e));
}

/**
 * Run a session call, again every `pauseMs` while the answer is "no quorum" (an election,
 * nodes coming back), until `signal` aborts or `endsAt` (unix ms) is too close.
 */
export async function withQuorumRetry(
  signal: AbortSignal | undefined,
  call: () => Promise<Uint8Array>,
  opts: { endsAt?: number; pauseMs?: number } = {},
): Promise<Uint8Array> {
  const { endsAt = Infinity, pauseMs = 1_000 } = opts;
  for (;;) {
    try {
      return await call();
    } catch (e) {
      const err = sessionFailure(e);
      const retry = err instanceof ClientError && err.code === "no-quorum" &&
        !signal?.aborted && Date.now() + pauseMs < endsAt;
      if (!retry) throw err;
      await sleep(pauseMs, signal).catch(() => {
        throw err;
      });
    }
  }
}
