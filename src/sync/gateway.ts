/**
 * The member's side of one-shot clients (`filesync push`/`pull`, see src/client): answers
 * their session calls (bodies in src/client/wire.ts).
 *
 * - `tree` reads one consistent committed version: the latest after a Raft read barrier (so a
 *   pull right after a push sees it), or the version a number, snapshot label or time names.
 *   The listing of a version is kept for a minute per client so its pages cost one read.
 * - `commit` takes a client's batch of file ops. The client has pushed the objects its puts
 *   need into this node's packs; here they are checked present, made durable on a majority of
 *   voters (the same write path as a local edit, DESIGN step 4), and the ops are proposed as
 *   one command, applied all or none. Meta ops (membership, invites, labels) are refused: a
 *   client holds an invite, not a vote. A commit may instead name staged parts (one
 *   `commit-batch` op): their ops are read back from the index and checked the same way.
 * - `stage` proposes one part of a batch too large for one Raft entry; nothing is applied
 *   until the `commit-batch`.
 */
import type { Hash } from "../chunk/mod.ts";
import {
  type ApplyResult,
  type Command,
  CommandDecodeError,
  decodeCommand,
  type FileOp,
  type IndexState,
} from "../fsm/mod.ts";
import { SessionError } from "../net/mod.ts";
import { RaftError } from "../raft/mod.ts";
import type { LocalStore } from "../store/mod.ts";
import {
  BodyDecodeError,
  COMMIT_METHOD,
  decodeCommitRequest,
  decodeTreeRequest,
  encodeCommitResult,
  encodeTreePage,
  STAGE_METHOD,
  TREE_METHOD,
  type TreeEntry,
} from "../client/wire.ts";
import type { Logger } from "./log.ts";
import { objectsOfOps } from "./replicate.ts";
import { mapLimit } from "../util/mod.ts";

/** Object lookups in flight while a commit checks that everything was pushed. */
const PRESENCE_LOOKUPS = 64;
/** A client's listing is kept this long for its next pages, ms. */
const LISTING_TTL_MS = 60_000;

/** What the gateway needs from the daemon. */
export interface GatewayDeps {
  index: IndexState;
  store: LocalStore;
  /** Resolves once this node has applied everything committed before the call. */
  readBarrier(): Promise<void>;
  /** Make objects durable on a majority of voters (this node included); `signal` cancels. */
  replicate(hashes: Hash[], signal?: AbortSignal): Promise<void>;
  propose(command: Command): Promise<ApplyResult>;
  log: Logger;
}

interface Listing {
  key: string;
  records: TreeEntry[];
  until: number;
}

/** Answers the session calls of one-shot clients. */
export class ClientGateway {
  readonly #listings = new Map<string, Listing>();

  constructor(private readonly deps: GatewayDeps) {}

  /** The session handler: dispatch one call. */
  async handle(peer: string, method: string, body: Uint8Array): Promise<Uint8Array> {
    try {
      if (method === TREE_METHOD) return await this.#tree(peer, body);
      if (method === COMMIT_METHOD) return await this.#commit(peer, body);
      if (method === STAGE_METHOD) return await this.#stage(peer, body);
    } catch (e) {
      if (e instanceof BodyDecodeError || e instanceof CommandDecodeError) {
        throw new SessionError("invalid", e.message);
      }
      throw e;
    }
    throw new SessionError("unknown-method", `unknown method ${JSON.stringify(method)}`);
  }

  async #tree(peer: string, body: Uint8Array): Promise<Uint8Array> {
    const req = decodeTreeRequest(body);
    const version = await resolveVersion(this.deps.index, req.at, this.deps.readBarrier).catch(
      (e) => {
        throw e instanceof VersionError ? new SessionError(e.code, e.message) : e;
      },
    );
    const key = `${version}\0${req.prefix}`;
    const now = Date.now();
    for (const [p, l] of this.#listings) if (l.until <= now) this.#listings.delete(p);
    let listing = this.#listings.get(peer);
    if (!listing || listing.key !== key) {
      listing = { key, records: await this.#list(req.prefix, version), until: 0 };
      this.#listings.set(peer, listing);
    }
    listing.until = now + LISTING_TTL_MS;
    return encodeTreePage({
      version,
      total: listing.records.length,
      records: listing.records.slice(req.offset, req.offset + req.limit),
    });
  }

  /** The live entries at `prefix` and below it, as of `version`. */
  async #list(prefix: string, version: number): Promise<TreeEntry[]> {
    const out: TreeEntry[] = [];
    const pick = (r: TreeEntry) =>
      out.push({
        path: r.path,
        version: r.version,
        kind: r.kind,
        root: r.root,
        size: r.size,
        mode: r.mode,
        mtime: r.mtime,
        ...(r.kind === "symlink" ? { target: r.target } : {}),
      });
    if (prefix !== "") {
      const self = await this.deps.index.get(prefix, { at: version });
      if (self && !self.deleted) pick(self);
    }
    for await (const r of this.deps.index.list({ prefix: prefix || undefined, at: version })) {
      pick(r);
    }
    return out;
  }

  /**
   * The file ops a commit carries: its own, or those of the staged parts its one
   * `commit-batch` op names. Anything else a client may not propose.
   */
  async #fileOpsOf(command: Command): Promise<FileOp[]> {
    const [first] = command.ops;
    if (command.ops.length === 1 && first.op === "commit-batch") {
      const staged = await this.deps.index.stagedOps(first.batch, first.parts);
      if (staged === null) {
        throw new SessionError("invalid", `batch ${first.batch}: parts are missing or it is done`);
      }
      return staged;
    }
    const ops: FileOp[] = [];
    for (const op of command.ops) {
      if (op.op !== "put" && op.op !== "mkdir" && op.op !== "delete" && op.op !== "rename") {
        throw new SessionError("invalid", `a client may not propose ${op.op} ops here`);
      }
      ops.push(op);
    }
    return ops;
  }

  /** Propose one staged part of a large batch (no objects needed yet: the commit checks). */
  async #stage(peer: string, body: Uint8Array): Promise<Uint8Array> {
    const command = decodeCommand(body);
    if (command.ops.length !== 1 || command.ops[0].op !== "stage") {
      throw new SessionError("invalid", "a stage call carries exactly one stage op");
    }
    let result: ApplyResult;
    try {
      result = await this.deps.propose({ origin: peer, ops: command.ops, time: Date.now() });
    } catch (e) {
      // Staging a part again replaces it, so the client may simply retry.
      throw new SessionError("no-quorum", `part not staged: ${errText(e)}`);
    }
    if (!result.ok) throw new SessionError(result.code, result.message);
    return encodeCommitResult(result.version);
  }

  async #commit(peer: string, body: Uint8Array): Promise<Uint8Array> {
    const request = decodeCommitRequest(body);
    const command = decodeCommand(request.command);
    const deadline = Date.now() + request.budgetMs;
    const ops = await this.#fileOpsOf(command);
    const { index, store } = this.deps;
    const bases = new Map<string, Hash>();
    for (const op of ops) {
      if (op.op !== "put" || op.base === 0) continue;
      const cur = await index.get(op.path);
      if (cur && cur.version === op.base && !cur.deleted && cur.kind === "file") {
        bases.set(op.path, cur.root);
      }
    }
    const t0 = performance.now();
    let objects: Hash[];
    try {
      objects = await objectsOfOps(
        ops,
        store.packs,
        (op) => op.op === "put" ? bases.get(op.path) ?? null : null,
      );
    } catch (e) {
      throw new SessionError(
        "missing-objects",
        `the batch names objects not pushed: ${errText(e)}`,
      );
    }
    // Every object must be here before anything is replicated or proposed. Looked up many at
    // a time: one by one, thousands of index reads took over a second.
    const held = await mapLimit(
      objects,
      PRESENCE_LOOKUPS,
      (h) => store.holds(h),
    );
    if (held.includes(false)) {
      throw new SessionError("missing-objects", "the batch names chunks that were not pushed");
    }
    const listed = performance.now();
    const budget = AbortSignal.timeout(Math.max(1, request.budgetMs));
    try {
      if (objects.length > 0) await this.deps.replicate(objects, budget);
    } catch (e) {
      throw new SessionError("no-quorum", budget.aborted ? "out of time" : errText(e));
    }
    if (Date.now() >= deadline) {
      throw new SessionError("no-quorum", "out of time before the batch could be proposed");
    }
    const replicated = performance.now();
    let result: ApplyResult;
    try {
      result = await this.deps.propose({ origin: peer, ops: command.ops, time: Date.now() });
    } catch (e) {
      // A timed-out or dropped proposal may still commit (Raft cannot take it back): the
      // client re-reads the tree to find out rather than report a failure that may be false.
      const unknown = e instanceof RaftError && (e.code === "Timeout" || e.code === "LeaderLost");
      throw new SessionError(
        unknown ? "unknown-outcome" : "no-quorum",
        `${unknown ? "outcome unknown" : "not committed"}: ${errText(e)}`,
      );
    }
    if (!result.ok) {
      throw new SessionError(
        result.code,
        `${result.path ? `${result.path}: ` : ""}${result.message}`,
      );
    }
    this.deps.log.info("client batch committed", {
      client: peer,
      ops: ops.length,
      objects: objects.length,
      version: result.version,
      checkMs: Math.round(listed - t0),
      replicateMs: Math.round(replicated - listed),
      commitMs: Math.round(performance.now() - replicated),
    });
    return encodeCommitResult(result.version);
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A version that cannot be named or confirmed. */
export class VersionError extends Error {
  override name = "VersionError";
  constructor(readonly code: "no-quorum" | "unknown-version", message: string) {
    super(message);
  }
}

/**
 * The version `at` names, after a read barrier: "" (or "latest") the latest committed; a
 * snapshot label; a version number; or a time (ISO 8601, or anything Date.parse reads), the
 * newest version committed at or before it. Labels win over the other readings, then numbers.
 */
export async function resolveVersion(
  index: IndexState,
  at: string,
  readBarrier: () => Promise<void>,
): Promise<number> {
  // Every form reads this node's applied state, so catch up with the leader first: a label
  // or version just committed through another member must be found here too.
  try {
    await readBarrier();
  } catch (e) {
    throw new VersionError("no-quorum", `cannot confirm the latest version: ${errText(e)}`);
  }
  const applied = await index.applied();
  if (at === "" || at === "latest") return applied;
  const label = await index.label(at);
  if (label) return label.version;
  if (/^\d+$/.test(at)) {
    const v = Number(at);
    if (v > applied) {
      throw new VersionError(
        "unknown-version",
        `version ${v} is not committed (latest ${applied})`,
      );
    }
    return await unpruned(index, v);
  }
  const time = Date.parse(at);
  if (!Number.isNaN(time)) {
    const v = await index.versionAt(time);
    if (v === 0) throw new VersionError("unknown-version", `no version was committed by ${at}`);
    return await unpruned(index, v);
  }
  throw new VersionError(
    "unknown-version",
    `${JSON.stringify(at)} is not a version number, a snapshot label or a time`,
  );
}

/** `v`, unless retention pruned versions its tree needs (a label's version would be kept). */
async function unpruned(index: IndexState, v: number): Promise<number> {
  const horizon = await index.horizon();
  if (v < horizon) {
    throw new VersionError(
      "unknown-version",
      `version ${v} is older than the history kept (from version ${horizon} on; ` +
        `snapshot labels keep theirs)`,
    );
  }
  return v;
}
