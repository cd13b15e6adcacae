/**
 * Named snapshots of the directory tree: a label, a time and the tree root. The tree's nodes
 * live in the object store, so two snapshots can be diffed long after the files changed.
 */
import {
  parseSnapshotRecord,
  SNAPSHOT_PREFIX,
  snapshotKey,
  type SnapshotRecord,
} from "./schema.ts";

/** A snapshot was asked for by a name that matches none. */
export class UnknownSnapshotError extends Error {
  override name = "UnknownSnapshotError";
  constructor(readonly ref: string) {
    super(`no snapshot named ${JSON.stringify(ref)}`);
  }
}

/** Snapshot records kept in Deno KV. */
export class Snapshots {
  constructor(private readonly kv: Deno.Kv) {}

  /**
   * Record a snapshot. Ids sort by time (zero-padded milliseconds plus a counter suffix), so
   * listing in key order lists oldest first. A label must be unique.
   */
  async create(
    fields: Omit<SnapshotRecord, "id" | "label"> & { label?: string },
  ): Promise<SnapshotRecord> {
    if (fields.label !== undefined) {
      if (!/^[A-Za-z0-9._-]{1,100}$/.test(fields.label)) {
        throw new RangeError(
          "a snapshot label is 1-100 characters of letters, digits, '.', '_' or '-'",
        );
      }
      if (await this.find(fields.label)) {
        throw new RangeError(`a snapshot labelled ${JSON.stringify(fields.label)} exists already`);
      }
    }
    const id = `${String(fields.time).padStart(15, "0")}-${crypto.randomUUID().slice(0, 8)}`;
    const rec: SnapshotRecord = { ...fields, id, label: fields.label ?? "" };
    const result = await this.kv.atomic().check({ key: snapshotKey(id), versionstamp: null })
      .set(snapshotKey(id), rec).commit();
    if (!result.ok) throw new Error(`snapshot id ${id} collided; try again`);
    return rec;
  }

  /** Every snapshot, oldest first. */
  async list(): Promise<SnapshotRecord[]> {
    const out: SnapshotRecord[] = [];
    for await (const e of this.kv.list({ prefix: SNAPSHOT_PREFIX })) {
      out.push(parseSnapshotRecord(e.value));
    }
    return out;
  }

  /** A snapshot by label or id (or a unique id prefix), or null. */
  async find(ref: string): Promise<SnapshotRecord | null> {
    const all = await this.list();
    const byLabel = all.find((s) => s.label === ref);
    if (byLabel) return byLabel;
    const byId = all.filter((s) => s.id.startsWith(ref));
    return byId.length === 1 ? byId[0] : null;
  }

  /** Like find(), but throws UnknownSnapshotError. */
  async resolve(ref: string): Promise<SnapshotRecord> {
    const s = await this.find(ref);
    if (!s) throw new UnknownSnapshotError(ref);
    return s;
  }
}
