/** `filesync remove <dir> <peer-id>`: take a member out of the cluster. */
import { DATA_DIR_NAME } from "../store/mod.ts";
import { callControl } from "../sync/mod.ts";
import { requireDirectory } from "./errors.ts";

export async function removeMemberCommand(dir: string, peerId: string): Promise<number> {
  const root = await requireDirectory(dir);
  const r = await callControl<{ removed: string }>(
    `${root}/${DATA_DIR_NAME}`,
    "POST",
    "/remove",
    { peerId },
  );
  console.log(`removed ${r.removed}`);
  return 0;
}
