/**
 * The cluster this node belongs to: its id and secret, kept in the local Deno KV. The first
 * node creates them; a joiner receives them from the member that admits it.
 */
import { assertHash } from "../chunk/mod.ts";
import { metaKey } from "./schema.ts";

/** Identity of the cluster a node belongs to. */
export interface ClusterInfo {
  clusterId: string;
  /** 32 random bytes; every invite's secret is derived from it. Never leaves the cluster. */
  secret: Uint8Array;
  createdAt: number;
}

/** The cluster record, or null before the node has created or joined one. */
export async function loadCluster(kv: Deno.Kv): Promise<ClusterInfo | null> {
  const v = (await kv.get<ClusterInfo>(metaKey("cluster"))).value;
  if (v === null) return null;
  assertHash(v.secret, "cluster secret");
  return v;
}

/** Record the cluster (once: a second call with another id is refused). */
export async function saveCluster(kv: Deno.Kv, info: ClusterInfo): Promise<void> {
  const r = await kv.atomic().check({ key: metaKey("cluster"), versionstamp: null })
    .set(metaKey("cluster"), info).commit();
  if (!r.ok) {
    const cur = await loadCluster(kv);
    if (cur?.clusterId !== info.clusterId) {
      throw new Error(`this directory already belongs to cluster ${cur?.clusterId}`);
    }
  }
}

/** A new cluster identity. */
export function newCluster(): ClusterInfo {
  const id = crypto.getRandomValues(new Uint8Array(8));
  return {
    clusterId: `fs-${Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("")}`,
    secret: crypto.getRandomValues(new Uint8Array(32)),
    createdAt: Date.now(),
  };
}
