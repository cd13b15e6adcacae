/**
 * History on a running node: `filesync log <dir> <path>` lists the retained versions of a path,
 * `filesync restore <dir> <path> --at X` commits an old state of a path as a new version, and
 * cluster-wide snapshot labels (`snapshot create|list` when a node runs for <dir>).
 */
import { DATA_DIR_NAME } from "../store/mod.ts";
import { callControl, NotRunningError } from "../sync/mod.ts";
import { CliError, requireDirectory } from "./errors.ts";
import { formatBytes, printJson } from "./format.ts";

interface VersionJson {
  version: number;
  time: string | null;
  kind: string;
  deleted: boolean;
  size: number;
  root: string;
  target?: string;
  origin: string;
  labels: string[];
}

async function dataDirOf(dir: string): Promise<string> {
  return `${await requireDirectory(dir)}/${DATA_DIR_NAME}`;
}

/** A path as the index names it: no leading "./" or trailing "/" (absolute paths are refused). */
function indexPath(path: string): string {
  return path.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
}

/** `filesync log <dir> <path> [--json]`. */
export async function logCommand(dir: string, path: string, opts: { json?: boolean }) {
  const versions = await callControl<VersionJson[]>(await dataDirOf(dir), "POST", "/history", {
    path: indexPath(path),
  });
  if (opts.json) printJson(versions);
  else if (versions.length === 0) console.log(`no versions of ${path}`);
  else {
    for (const v of versions) {
      const what = v.deleted
        ? "deleted"
        : v.kind === "file"
        ? `${formatBytes(v.size)}  ${v.root.slice(0, 12)}`
        : v.kind === "symlink"
        ? `-> ${v.target}`
        : "directory";
      const labels = v.labels.length > 0 ? `  [${v.labels.join(", ")}]` : "";
      console.log(`${String(v.version).padStart(8)}  ${v.time ?? "-"}  ${what}${labels}`);
    }
  }
  return 0;
}

/** `filesync restore <dir> <path> --at X [--json]`. */
export async function restoreCommand(
  dir: string,
  path: string,
  opts: { at: string; json?: boolean },
) {
  const r = await callControl<{ path: string; from: number; version: number; ops: number }>(
    await dataDirOf(dir),
    "POST",
    "/restore",
    { path: indexPath(path), at: opts.at },
    // Fetching old bytes and making them durable can take a while (the node gives up at 60 s).
    120_000,
  );
  if (opts.json) printJson(r);
  else if (r.ops === 0) console.log(`${r.path} is already as it was at version ${r.from}`);
  else console.log(`restored ${r.path} as of version ${r.from}: version ${r.version}`);
  return 0;
}

/**
 * Create a cluster-wide snapshot label if a node runs for `dir`; null if none does (the caller
 * then takes a local snapshot).
 */
export async function clusterSnapshotCreate(
  dir: string,
  label: string | undefined,
  opts: { json?: boolean },
): Promise<number | null> {
  const dataDir = await dataDirOf(dir);
  try {
    await callControl(dataDir, "GET", "/labels");
  } catch (e) {
    if (e instanceof NotRunningError) return null;
    throw e;
  }
  if (!label) throw new CliError("a cluster-wide snapshot needs a label", 2);
  const r = await callControl<{ name: string; version: number }>(dataDir, "POST", "/label", {
    name: label,
  });
  if (opts.json) printJson(r);
  else console.log(`snapshot ${r.name} = version ${r.version} (cluster-wide)`);
  return 0;
}

/** List cluster-wide snapshot labels if a node runs for `dir`; null if none does. */
export async function clusterSnapshotList(
  dir: string,
  opts: { json?: boolean },
): Promise<number | null> {
  let labels: { name: string; version: number; time: number }[];
  try {
    labels = await callControl(await dataDirOf(dir), "GET", "/labels");
  } catch (e) {
    if (e instanceof NotRunningError) return null;
    throw e;
  }
  if (opts.json) printJson(labels.map((l) => ({ ...l, time: new Date(l.time).toISOString() })));
  else if (labels.length === 0) console.log("no snapshots");
  else {
    for (const l of labels) {
      console.log(`${l.name.padEnd(24)} version ${l.version}  ${new Date(l.time).toISOString()}`);
    }
  }
  return 0;
}
