/**
 * What `filesync push` proposes: the tree planner of src/sync (planTreeChanges) with its kind
 * conflict reported as the client's "rejected" error (exit code 6).
 */
import { KindChangeError, planTreeChanges, type TreePlan } from "../sync/mod.ts";
import { ClientError } from "./connect.ts";
import type { LocalEntry } from "./local_tree.ts";
import type { TreeEntry } from "./wire.ts";

/** The ops of a push, and what they carry. */
export type PushPlan = TreePlan;

/** Plan the ops that make `remote` (live entries at and under `prefix`) equal to `local`. */
export function planPush(
  local: readonly LocalEntry[],
  remote: readonly TreeEntry[],
  prefix: string,
  deleteExtra: boolean,
): PushPlan {
  try {
    return planTreeChanges(local, remote, prefix, deleteExtra);
  } catch (e) {
    if (e instanceof KindChangeError) throw new ClientError("rejected", e.message);
    throw e;
  }
}
