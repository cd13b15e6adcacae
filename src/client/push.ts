/**
 * `filesync push <dir> --to <invite>`: make the cluster's tree under a prefix equal to a local
 * folder in one atomic batch, and return only once the batch is committed and every object it
 * names is durable on a majority of voters. A one-shot process: nothing of it stays running
 * and nothing is written into the folder.
 *
 * Steps: connect (prove the invite to a member, the gateway); hash the folder; read the
 * cluster's latest tree; plan the ops (plan.ts); push the objects of the files put to the
 * gateway (it answers which it already holds, so unchanged chunks never move); then ask it to
 * commit, which makes the objects durable on a majority and proposes the ops as one command.
 * If another writer committed in between (a compare-and-swap conflict) the push re-plans
 * against the new tree; if there is no quorum it retries until the deadline.
 */
import { type Hash, hashKey, toHex } from "../chunk/mod.ts";
import { encodeCommand, type FileOp } from "../fsm/mod.ts";
import { deadline, PushError } from "../net/mod.ts";
import { ClientError, type ClusterClient, connectCluster } from "./connect.ts";
import { LocalTree } from "./local_tree.ts";
import { planPush, type PushPlan } from "./plan.ts";
import { readRemoteTree, sessionFailure, withQuorumRetry } from "./remote_tree.ts";
import { COMMIT_METHOD, decodeCommitResult, encodeCommitRequest, STAGE_METHOD } from "./wire.ts";

/** Streams the objects of one push are spread over. */
const PUSH_STREAMS = 4;
/** Time kept back from the gateway's budget so its answer arrives before we give up, ms. */
const COMMIT_MARGIN_MS = 1_000;
/** Re-plans after a conflict before giving up. */
const MAX_REPLANS = 5;

/** Options of a push. */
export interface PushOptions {
  invite: string;
  /** Cluster path the folder maps to ("" = the root). */
  prefix: string;
  /** Delete what the folder lacks under the prefix. */
  deleteExtra: boolean;
  /** Give up after this long, ms. */
  timeoutMs: number;
  onProgress?: (p: PushProgress) => void;
  /** An entry left out (a socket, FIFO or device). */
  onSkip?: (path: string, why: string) => void;
  /** Bind the client's transport here (tests). */
  listen?: string[];
}

/** Progress of a push. */
export interface PushProgress {
  phase: "hash" | "send" | "commit";
  files: number;
  filesTotal: number;
  bytes: number;
  bytesTotal: number;
}

/** What a push did. */
export interface PushSummary {
  /** Committed version of the batch (the tree's current version if nothing changed). */
  version: number;
  changed: boolean;
  put: number;
  mkdir: number;
  delete: number;
  /** Objects and object bytes sent (the gateway lacked them). */
  objectsSent: number;
  bytesSent: number;
  files: number;
  bytes: number;
  seconds: number;
}

/** Run a push; throws ClientError with a one-line message on failure. */
export async function push(dir: string, opts: PushOptions): Promise<PushSummary> {
  const started = performance.now();
  // The folder is hashed first, with no cluster connection open: hashing a large folder takes
  // as long as it takes, and `timeoutMs` bounds only the work with the cluster after it.
  const tree = await LocalTree.scan(dir, (p) =>
    opts.onProgress?.({
      phase: "hash",
      files: p.files,
      filesTotal: 0,
      bytes: p.bytes,
      bytesTotal: 0,
    }), opts.onSkip);
  const endsAt = Date.now() + opts.timeoutMs;
  const timer = deadline(opts.timeoutMs);
  const signal = timer.signal;
  let client: ClusterClient | null = null;
  try {
    client = await connectCluster(opts.invite, { signal, listen: opts.listen });
    const files = tree.entries.filter((e) => e.kind === "file");
    const summary = {
      files: files.length,
      bytes: files.reduce((n, e) => n + e.size, 0),
      objectsSent: 0,
      bytesSent: 0,
    };
    /** The counts of the batch last proposed whose outcome is not known to be a failure. */
    let proposed: PushPlan["counts"] | null = null;
    for (let attempt = 0;; attempt++) {
      const remote = await readRemoteTree(client, opts.prefix, "", signal);
      const plan = planPush(tree.entries, remote.records, opts.prefix, opts.deleteExtra);
      if (plan.ops.length === 0) {
        // Nothing (left) to do. After an "unknown outcome" this is how we learn that our
        // batch did commit: report what it changed.
        return {
          version: remote.version,
          changed: proposed !== null,
          put: proposed?.put ?? 0,
          mkdir: proposed?.mkdir ?? 0,
          delete: proposed?.delete ?? 0,
          ...summary,
          seconds: (performance.now() - started) / 1000,
        };
      }
      const hashes = distinctHashes(plan.putFiles.flatMap((p) => tree.objectsOf(p)));
      const sent = await sendObjects(client, tree, hashes, plan.bytes, plan.putFiles.length, {
        signal,
        onProgress: opts.onProgress,
      });
      summary.objectsSent += sent.objects;
      summary.bytesSent += sent.bytes;
      opts.onProgress?.({
        phase: "commit",
        files: plan.putFiles.length,
        filesTotal: plan.putFiles.length,
        bytes: plan.bytes,
        bytesTotal: plan.bytes,
      });
      try {
        const command = await stageIfLarge(client, plan.ops, endsAt, signal);
        proposed = plan.counts;
        const version = await commitWithRetry(client, command, endsAt, signal);
        return {
          version,
          changed: true,
          ...plan.counts,
          ...summary,
          seconds: (performance.now() - started) / 1000,
        };
      } catch (e) {
        const again = e instanceof ClientError &&
          (e.code === "conflict" || e.code === "unknown-outcome");
        // After a conflict our batch certainly did not commit; after an unknown outcome it may.
        if (e instanceof ClientError && e.code === "conflict") proposed = null;
        if (!again || attempt >= MAX_REPLANS) throw e;
        // Another writer committed under the prefix since we read it, or our own batch may
        // have committed without us hearing it: plan again against the tree as it is now
        // (an identical tree plans nothing, so a batch that did commit is not sent twice).
      }
    }
  } catch (e) {
    if (signal.aborted) {
      throw new ClientError(
        "timeout",
        `timed out after ${opts.timeoutMs / 1000} s: ${(e as Error).message}`,
      );
    }
    throw sessionFailure(e);
  } finally {
    timer.clear();
    tree.close();
    await client?.close();
  }
}

/** Most encoded bytes of one Raft entry a push proposes (tests lower it to force parts). */
function partBytes(): number {
  const fromEnv = Number(Deno.env.get("FILESYNC_PART_BYTES"));
  return Number.isSafeInteger(fromEnv) && fromEnv >= 1024 ? fromEnv : 3 * 1024 * 1024;
}

/** Most file ops in one staged part (the index's limit per stage op). */
const MAX_PART_OPS = 50_000;

/**
 * The command that commits the batch. A batch that fits one Raft entry is that entry. A
 * larger one is staged first, part by part (each its own entry, kept aside in the index),
 * and committed by one `commit-batch` op that applies every part as one command: still all
 * or none, and invisible to readers until then.
 */
async function stageIfLarge(
  client: ClusterClient,
  ops: FileOp[],
  endsAt: number,
  signal: AbortSignal,
): Promise<Uint8Array> {
  const origin = client.host.peerId;
  const limit = partBytes();
  const whole = tryEncode({ origin, ops, time: Date.now() });
  if (whole !== null && whole.length <= limit) return whole;
  const batch = toHex(crypto.getRandomValues(new Uint8Array(12)));
  const parts = splitIntoParts(origin, batch, ops, limit);
  for (let part = 0; part < parts.length; part++) {
    const body = parts[part];
    await withQuorumRetry(signal, () => client.session.call(STAGE_METHOD, body, signal), {
      endsAt,
    });
  }
  return encodeCommand({
    origin,
    ops: [{ op: "commit-batch", batch, parts: parts.length }],
    time: Date.now(),
  });
}

/** The stage commands of a batch: as few parts as keep each under `limit` bytes. */
function splitIntoParts(origin: string, batch: string, ops: FileOp[], limit: number) {
  for (let n = Math.max(2, Math.ceil(ops.length / MAX_PART_OPS)); n <= ops.length; n *= 2) {
    const size = Math.ceil(ops.length / n);
    const parts: Uint8Array[] = [];
    for (let i = 0; i < ops.length; i += size) {
      const encoded = tryEncode({
        origin,
        ops: [{ op: "stage", batch, part: parts.length, ops: ops.slice(i, i + size) }],
        time: Date.now(),
      });
      if (encoded === null || encoded.length > limit) break;
      parts.push(encoded);
    }
    if (parts.length === Math.ceil(ops.length / size)) return parts;
  }
  throw new ClientError("rejected", "a single change is too large to propose");
}

function tryEncode(command: Parameters<typeof encodeCommand>[0]): Uint8Array | null {
  try {
    return encodeCommand(command);
  } catch {
    return null;
  }
}

/** Push the objects to the gateway over a few streams; resolves once it holds them durably. */
async function sendObjects(
  client: ClusterClient,
  tree: LocalTree,
  hashes: Hash[],
  bytesTotal: number,
  filesTotal: number,
  opts: { signal: AbortSignal; onProgress?: (p: PushProgress) => void },
): Promise<{ objects: number; bytes: number }> {
  let bytes = 0;
  const read = async (h: Hash) => {
    const data = await tree.read(h);
    bytes += data.length;
    opts.onProgress?.({
      phase: "send",
      files: 0,
      filesTotal,
      bytes: Math.min(bytes, bytesTotal),
      bytesTotal,
    });
    return data;
  };
  const parts = Math.max(1, Math.min(PUSH_STREAMS, Math.floor(hashes.length / 64)));
  const size = Math.ceil(hashes.length / parts);
  const slices: Hash[][] = [];
  for (let i = 0; i < hashes.length; i += size) slices.push(hashes.slice(i, i + size));
  try {
    const results = await Promise.all(
      slices.map((s) => client.pusher.push(client.gateway, s, read, { signal: opts.signal })),
    );
    return {
      objects: results.reduce((n, r) => n + r.sent, 0),
      bytes: results.reduce((n, r) => n + r.bytes, 0),
    };
  } catch (e) {
    if (e instanceof ClientError) throw e;
    if (opts.signal.aborted) throw e;
    const why = (e as Error).message;
    if (e instanceof PushError && e.code === "read") {
      throw new ClientError("unreadable", `reading the folder failed: ${why}`);
    }
    if (/full|ENOSPC|No space/i.test(why)) {
      throw new ClientError("disk", `the gateway could not store the objects: ${why}`);
    }
    throw new ClientError("unreachable", `sending objects failed: ${why}`);
  }
}

/** `hashes` without repeats (identical files share chunks), in first-seen order. */
function distinctHashes(hashes: Hash[]): Hash[] {
  const seen = new Set<string>();
  return hashes.filter((h) => {
    const key = hashKey(h);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Commit, retrying while there is no quorum (a leader election, nodes coming back). */
async function commitWithRetry(
  client: ClusterClient,
  command: Uint8Array,
  endsAt: number,
  signal: AbortSignal,
): Promise<number> {
  return decodeCommitResult(
    await withQuorumRetry(signal, () => {
      // The gateway must answer before we give up: give it our remaining time less a margin.
      const budgetMs = Math.max(0, endsAt - Date.now() - COMMIT_MARGIN_MS);
      if (budgetMs === 0) {
        throw new ClientError("timeout", "out of time before the batch committed");
      }
      return client.session.call(COMMIT_METHOD, encodeCommitRequest({ budgetMs, command }), signal);
    }, { endsAt }),
  );
}
