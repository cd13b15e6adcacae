/**
 * The replicated file index as a Raft state machine, kept in Deno KV. Every node applies the
 * same committed commands in the same order and so holds the same index.
 *
 * A command's ops are applied all or none, each checked against the version it was based on
 * (compare-and-swap); the new version of every path it touches is the entry's log index. The
 * records, the case-fold keys and the applied index are written in one atomic KV commit, so a
 * crash leaves the index either before or after an entry, and a re-delivered entry (index at
 * or below the applied one) is skipped.
 */
import type { Hash } from "../chunk/mod.ts";
import { EMPTY_FILE_ROOT } from "../merkle/mod.ts";
import { decodeCommand, decodeSnapshot, encodeSnapshot } from "./codec.ts";
import { ancestors, caseFold, indexPathProblem } from "./paths.ts";
import type { ApplyResult, Command, IndexRecord, Op, RejectCode } from "./types.ts";

/** Most ops in one command: each costs up to 3 KV mutations, and one commit allows 1,000. */
export const MAX_OPS_PER_COMMAND = 200;

type StoredRecord = Omit<IndexRecord, "path">;

class Rejection extends Error {
  constructor(
    readonly code: RejectCode,
    readonly path: string,
    message: string,
    readonly current: number,
  ) {
    super(message);
  }
}

/** Pending changes of one command, read-through to KV. */
class Overlay {
  readonly changed = new Map<string, IndexRecord>();
  readonly peers = new Map<string, string[]>();
  readonly usedInvites = new Set<string>();
  constructor(private readonly state: IndexState) {}

  async get(path: string): Promise<IndexRecord | null> {
    return this.changed.get(path) ?? await this.state.get(path);
  }

  set(rec: IndexRecord): void {
    this.changed.set(rec.path, rec);
  }
}

/** The file index state machine over a Deno KV database, under a key prefix. */
export class IndexState {
  constructor(private readonly kv: Deno.Kv, private readonly prefix: Deno.KvKey = ["fsm"]) {}

  #rec(path: string): Deno.KvKey {
    return [...this.prefix, "rec", path];
  }
  #fold(path: string): Deno.KvKey {
    return [...this.prefix, "fold", caseFold(path)];
  }
  get #appliedKey(): Deno.KvKey {
    return [...this.prefix, "applied"];
  }
  #peer(peerId: string): Deno.KvKey {
    return [...this.prefix, "peer", peerId];
  }
  #used(inviteId: string): Deno.KvKey {
    return [...this.prefix, "used", inviteId];
  }

  /** The replicated address book: where each member said it can be reached. */
  async peers(): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for await (const e of this.kv.list<string[]>({ prefix: [...this.prefix, "peer"] })) {
      out.set(e.key[e.key.length - 1] as string, e.value);
    }
    return out;
  }

  /** Whether a single-use invite has been consumed. */
  async inviteUsed(inviteId: string): Promise<boolean> {
    return (await this.kv.get(this.#used(inviteId))).value !== null;
  }

  /** The record at `path` (live or tombstone), or null. */
  async get(path: string): Promise<IndexRecord | null> {
    const e = await this.kv.get<StoredRecord>(this.#rec(path));
    return e.value ? { path, ...e.value } : null;
  }

  /** Every record (tombstones included when asked), in path order. */
  async *list(
    options: { tombstones?: boolean; prefix?: string } = {},
  ): AsyncGenerator<IndexRecord> {
    const selector: Deno.KvListSelector = options.prefix
      ? { start: this.#rec(`${options.prefix}/`), end: this.#rec(`${options.prefix}0`) }
      : { prefix: [...this.prefix, "rec"] };
    for await (const e of this.kv.list<StoredRecord>(selector)) {
      if (!options.tombstones && e.value.deleted) continue;
      yield { path: e.key[e.key.length - 1] as string, ...e.value };
    }
  }

  /** Index of the last applied entry (0 before the first). */
  async applied(): Promise<number> {
    return (await this.kv.get<number>(this.#appliedKey)).value ?? 0;
  }

  /**
   * Apply the committed entry `index` carrying an encoded Command. Deterministic: the result
   * depends only on the state and the entry. Invalid commands are rejected, not thrown, so
   * the log moves on identically everywhere.
   */
  async apply(index: number, data: Uint8Array): Promise<ApplyResult> {
    const applied = await this.applied();
    if (index <= applied) {
      return {
        ok: false,
        code: "invalid",
        path: "",
        message: "entry already applied",
        current: applied,
      };
    }
    let command: Command;
    try {
      command = decodeCommand(data);
    } catch (e) {
      await this.kv.set(this.#appliedKey, index);
      return { ok: false, code: "invalid", path: "", message: (e as Error).message, current: 0 };
    }
    const overlay = new Overlay(this);
    try {
      if (command.ops.length > MAX_OPS_PER_COMMAND) {
        throw new Rejection(
          "invalid",
          "",
          `more than ${MAX_OPS_PER_COMMAND} ops in one command`,
          0,
        );
      }
      for (const op of command.ops) await this.#check(op, index, command.origin, overlay);
    } catch (e) {
      if (!(e instanceof Rejection)) throw e;
      await this.kv.set(this.#appliedKey, index);
      return { ok: false, code: e.code, path: e.path, message: e.message, current: e.current };
    }
    const atomic = this.kv.atomic();
    for (const rec of overlay.changed.values()) {
      const { path, ...stored } = rec;
      const before = await this.get(path);
      atomic.set(this.#rec(path), stored);
      if (rec.deleted) {
        if (before && !before.deleted) atomic.delete(this.#fold(path));
      } else atomic.set(this.#fold(path), path);
    }
    for (const [peerId, addrs] of overlay.peers) atomic.set(this.#peer(peerId), addrs);
    for (const id of overlay.usedInvites) atomic.set(this.#used(id), index);
    atomic.set(this.#appliedKey, index);
    const r = await atomic.commit();
    if (!r.ok) throw new Error(`file index commit for entry ${index} failed`);
    return { ok: true, version: index };
  }

  /** Validate one op against the overlay and stage its effect; throws Rejection. */
  async #check(op: Op, version: number, origin: string, o: Overlay): Promise<void> {
    const base = { version, origin, deleted: false };
    switch (op.op) {
      case "peer":
        o.peers.set(op.peerId, op.addrs);
        return;
      case "use-invite":
        if (o.usedInvites.has(op.inviteId) || await this.inviteUsed(op.inviteId)) {
          throw new Rejection("invite-used", "", "this single-use invite was used already", 0);
        }
        o.usedInvites.add(op.inviteId);
        return;
      case "put":
      case "mkdir": {
        this.#validPath(op.path);
        const cur = await this.#expect(op.path, op.base, o);
        if (op.op === "put" && cur && !cur.deleted && cur.kind === "dir") {
          await this.#expectEmpty(op.path, o);
        }
        await this.#ensureParents(op.path, op.mtime, base, o);
        await this.#noCaseTwin(op.path, o);
        if (op.op === "put") {
          o.set({
            path: op.path,
            ...base,
            kind: op.kind,
            root: op.root,
            size: op.size,
            mode: op.mode,
            mtime: op.mtime,
            ...(op.kind === "symlink" ? { target: op.target } : {}),
          });
        } else {
          o.set({ path: op.path, ...base, ...dirFields(op.mode, op.mtime) });
        }
        return;
      }
      case "delete": {
        this.#validPath(op.path);
        const cur = await this.#expect(op.path, op.base, o);
        if (!cur || cur.deleted) {
          throw new Rejection("not-found", op.path, `${op.path} does not exist`, cur?.version ?? 0);
        }
        if (cur.kind === "dir") await this.#expectEmpty(op.path, o);
        o.set({ ...cur, ...base, deleted: true });
        return;
      }
      case "rename": {
        this.#validPath(op.from);
        this.#validPath(op.to);
        if (op.from === op.to || op.to.startsWith(`${op.from}/`)) {
          throw new Rejection(
            "invalid",
            op.to,
            "cannot rename a path onto itself or below itself",
            0,
          );
        }
        const from = await this.#expect(op.from, op.fromBase, o);
        if (!from || from.deleted) {
          throw new Rejection(
            "not-found",
            op.from,
            `${op.from} does not exist`,
            from?.version ?? 0,
          );
        }
        if (from.kind === "dir") await this.#expectEmpty(op.from, o);
        const to = await this.#expect(op.to, op.toBase, o);
        if (to && !to.deleted && to.kind === "dir") await this.#expectEmpty(op.to, o);
        o.set({ ...from, ...base, deleted: true });
        await this.#ensureParents(op.to, from.mtime, base, o);
        await this.#noCaseTwin(op.to, o);
        o.set({ ...from, ...base, path: op.to });
        return;
      }
    }
  }

  #validPath(path: string): void {
    const problem = indexPathProblem(path);
    if (problem) {
      throw new Rejection("invalid", path, `invalid path ${JSON.stringify(path)}: ${problem}`, 0);
    }
  }

  /** The current record, after checking that `base` matches it (0 = absent or deleted). */
  async #expect(path: string, base: number, o: Overlay): Promise<IndexRecord | null> {
    const cur = await o.get(path);
    const live = cur && !cur.deleted ? cur.version : 0;
    const ok = base === 0 ? live === 0 : cur !== null && cur.version === base;
    if (!ok) {
      throw new Rejection(
        "conflict",
        path,
        `${path} is at version ${cur?.version ?? 0}${
          cur?.deleted ? " (deleted)" : ""
        }, not ${base}`,
        cur?.version ?? 0,
      );
    }
    return cur;
  }

  /** Every ancestor must be a directory; absent ones are created. */
  async #ensureParents(
    path: string,
    mtime: number,
    base: { version: number; origin: string; deleted: boolean },
    o: Overlay,
  ): Promise<void> {
    for (const dir of ancestors(path)) {
      const cur = await o.get(dir);
      if (cur && !cur.deleted) {
        if (cur.kind !== "dir") {
          throw new Rejection(
            "not-a-directory",
            dir,
            `${dir} is a ${cur.kind}, not a directory`,
            cur.version,
          );
        }
        continue;
      }
      await this.#noCaseTwin(dir, o);
      o.set({ path: dir, ...base, ...dirFields(0o755, mtime) });
    }
  }

  /** No other live path may differ from `path` only in case. */
  async #noCaseTwin(path: string, o: Overlay): Promise<void> {
    const fold = caseFold(path);
    for (const rec of o.changed.values()) {
      if (!rec.deleted && rec.path !== path && caseFold(rec.path) === fold) {
        throw new Rejection(
          "case-conflict",
          path,
          `${path} differs only in case from ${rec.path}`,
          0,
        );
      }
    }
    const twin = (await this.kv.get<string>(this.#fold(path))).value;
    if (twin && twin !== path) {
      const cur = await o.get(twin);
      if (cur && !cur.deleted) {
        throw new Rejection(
          "case-conflict",
          path,
          `${path} differs only in case from ${twin}`,
          cur.version,
        );
      }
    }
  }

  /** A directory being removed or replaced must have no live entry below it. */
  async #expectEmpty(dir: string, o: Overlay): Promise<void> {
    for await (const rec of this.list({ prefix: dir })) {
      const cur = o.changed.get(rec.path) ?? rec;
      if (!cur.deleted) {
        throw new Rejection("not-empty", dir, `${dir} is not empty (${cur.path})`, rec.version);
      }
    }
    for (const rec of o.changed.values()) {
      if (!rec.deleted && rec.path.startsWith(`${dir}/`)) {
        throw new Rejection("not-empty", dir, `${dir} is not empty (${rec.path})`, rec.version);
      }
    }
  }

  /** The whole state (records, tombstones, applied index) as bytes, for Raft snapshots. */
  async snapshot(): Promise<Uint8Array> {
    const records: IndexRecord[] = [];
    for await (const r of this.list({ tombstones: true })) records.push(r);
    const peers = [...(await this.peers())].map(([peerId, addrs]) => ({ peerId, addrs }));
    const usedInvites: string[] = [];
    for await (const e of this.kv.list({ prefix: [...this.prefix, "used"] })) {
      usedInvites.push(e.key[e.key.length - 1] as string);
    }
    return encodeSnapshot({ applied: await this.applied(), peers, usedInvites, records });
  }

  /**
   * Replace the state with a snapshot's. The applied index is cleared first and written last,
   * so a crash half-way leaves applied = 0 and Raft restores the snapshot again.
   */
  async restore(data: Uint8Array): Promise<void> {
    const snap = decodeSnapshot(data);
    await this.kv.delete(this.#appliedKey);
    const keys: Deno.KvKey[] = [];
    for await (const e of this.kv.list({ prefix: [...this.prefix, "rec"] })) keys.push(e.key);
    for (const part of ["fold", "peer", "used"]) {
      for await (const e of this.kv.list({ prefix: [...this.prefix, part] })) keys.push(e.key);
    }
    for (let i = 0; i < keys.length; i += 500) {
      const a = this.kv.atomic();
      for (const k of keys.slice(i, i + 500)) a.delete(k);
      await a.commit();
    }
    for (let i = 0; i < snap.records.length; i += 300) {
      const a = this.kv.atomic();
      for (const { path, ...stored } of snap.records.slice(i, i + 300)) {
        a.set(this.#rec(path), stored);
        if (!stored.deleted) a.set(this.#fold(path), path);
      }
      await a.commit();
    }
    const meta = this.kv.atomic();
    for (const p of snap.peers) meta.set(this.#peer(p.peerId), p.addrs);
    for (const id of snap.usedInvites) meta.set(this.#used(id), snap.applied);
    await meta.commit();
    await this.kv.set(this.#appliedKey, snap.applied);
  }
}

function dirFields(mode: number, mtime: number): {
  kind: "dir";
  root: Hash;
  size: number;
  mode: number;
  mtime: number;
} {
  return { kind: "dir", root: EMPTY_FILE_ROOT, size: 0, mode, mtime };
}
