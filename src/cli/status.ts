/** `filesync status <dir> [--json]`: what the running node of a directory knows. */
import type { NodeStatus } from "../daemon.ts";
import { DATA_DIR_NAME } from "../store/mod.ts";
import {
  callControl,
  ControlTimeoutError,
  NotRunningError,
  type SyncNowResult,
} from "../sync/control.ts";
import { CliError, requireDirectory } from "./errors.ts";
import { formatBytes, printJson } from "./format.ts";

export async function statusCommand(
  dir: string,
  opts: { json?: boolean; wait?: boolean; timeout?: number },
): Promise<number> {
  const root = await requireDirectory(dir);
  const dataDir = `${root}/${DATA_DIR_NAME}`;
  if (opts.wait) return await waitInSync(dataDir, (opts.timeout ?? 60) * 1000, opts.json);
  const s = await callControl<NodeStatus>(dataDir, "GET", "/status");
  if (opts.json) {
    printJson(s);
    return 0;
  }
  console.log(`node     ${s.peerId} (${s.role})`);
  console.log(`cluster  ${s.clusterId}`);
  console.log(
    `leader   ${s.leader || "(none)"}  term ${s.term}  commit ${s.commit}  applied ${s.applied}`,
  );
  console.log("members");
  for (const m of s.members) {
    const me = m.peerId === s.peerId ? " (this node)" : "";
    console.log(
      `  ${m.peerId} ${m.role}${me}${m.connected ? "" : " (not connected)"} ${m.addrs[0] ?? ""}`,
    );
  }
  console.log(`connections ${s.connections.length}`);
  console.log(
    `sync     ${s.sync.pendingUp} changes to commit (${formatBytes(s.sync.pendingUpBytes)}), ` +
      `${s.sync.pendingDown} to write (${formatBytes(s.sync.pendingDownBytes)}), ` +
      `${s.sync.passes} passes${s.sync.busy ? " (running)" : ""}`,
  );
  if (s.sync.waitingUp) console.log(`waiting  to commit: ${s.sync.waitingUp}`);
  if (s.sync.waitingDown) console.log(`waiting  to write: ${s.sync.waitingDown}`);
  return 0;
}

/**
 * `status --wait`: run sync passes until this node's directory matches the committed index
 * (exit 0) or the timeout passes (exit 1 with one line saying what is left, and why).
 */
async function waitInSync(dataDir: string, timeoutMs: number, json?: boolean): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last: SyncNowResult | null = null;
  let failure: string | null = null;
  while (Date.now() < deadline) {
    try {
      // A pass can take long (a large push waits for a majority): the call may take up to the
      // time left, and one that outlasts it is not taken for a node that is gone.
      const left = Math.max(1000, deadline - Date.now());
      last = await callControl<SyncNowResult>(dataDir, "POST", "/sync", undefined, left);
      failure = null;
      if (last.inSync) {
        if (json) printJson(last);
        return 0;
      }
    } catch (e) {
      if (e instanceof NotRunningError) throw e;
      // No quorum (a sync run starts by catching up with the leader), a pass that failed, or
      // one still running at the deadline: try again until the deadline.
      // A call cut short by the deadline tells less than an earlier answer: that one stays.
      if (e instanceof ControlTimeoutError) {
        failure ??= "the node was still catching up with the cluster or running a sync pass";
      } else failure = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  // Without a quorum no sync run answered: what the node knows comes from its status.
  const now = failure === null && last !== null
    ? last
    : await callControl<NodeStatus>(dataDir, "GET", "/status").then((s) => s.sync, () => last);
  const why = (reason: string | null | undefined) => (reason ? ` (${reason})` : "");
  throw new CliError(
    `not in sync after ${Math.round(timeoutMs / 1000)} s: ${now?.pendingUp ?? "?"} local ` +
      `changes not committed${why(now?.waitingUp)}, ${now?.pendingDown ?? "?"} committed ` +
      `changes not written${why(now?.waitingDown)}` +
      (failure === null ? "" : `; the last sync run failed: ${failure}`),
  );
}
