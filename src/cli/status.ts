/** `filesync status <dir> [--json]`: what the running node of a directory knows. */
import type { NodeStatus } from "../daemon.ts";
import { DATA_DIR_NAME } from "../store/mod.ts";
import { callControl } from "../sync/mod.ts";
import { requireDirectory } from "./errors.ts";
import { printJson } from "./format.ts";

export async function statusCommand(dir: string, opts: { json?: boolean }): Promise<number> {
  const root = await requireDirectory(dir);
  const s = await callControl<NodeStatus>(`${root}/${DATA_DIR_NAME}`, "GET", "/status");
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
  return 0;
}
