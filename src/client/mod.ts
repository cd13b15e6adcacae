/**
 * One-shot clients of a cluster, for cron jobs and CI: `push` makes the cluster's tree under a
 * prefix equal to a folder in one atomic, majority-durable batch; `pull` makes a folder equal
 * to one committed version. Neither becomes a member nor leaves anything running or on disk
 * besides the pulled files. `wire.ts` holds the session bodies the daemon's gateway
 * (src/sync/gateway.ts) answers.
 */
export { ClientError, type ClusterClient, connectCluster } from "./connect.ts";
export { push, type PushOptions, type PushProgress, type PushSummary } from "./push.ts";
export { pull, type PullOptions, type PullSummary } from "./pull.ts";
export { planPush, type PushPlan } from "./plan.ts";
export { LocalTree } from "./local_tree.ts";
export { readRemoteTree, type RemoteTree } from "./remote_tree.ts";
export * from "./wire.ts";
