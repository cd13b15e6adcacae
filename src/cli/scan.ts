/** `filesync scan <dir> [--json]`: bring the local index up to date and print the root. */
import { toHex } from "../chunk/mod.ts";
import { LocalStore } from "../store/mod.ts";
import { scanTree } from "../sync/mod.ts";
import { requireDirectory } from "./errors.ts";
import { formatBytes, formatCount, formatDuration, printJson } from "./format.ts";
import { ByteProgress } from "./progress.ts";

export interface ScanCommandOptions {
  json?: boolean;
  workers?: number;
}

/** Run the scan command; returns the exit code (1 if some entries could not be read). */
export async function scanCommand(dir: string, opts: ScanCommandOptions): Promise<number> {
  const root = await requireDirectory(dir);
  const store = await LocalStore.open(root);
  const progress = new ByteProgress("scanning", !opts.json && Deno.stderr.isTerminal());
  try {
    const r = await scanTree(store, {
      workers: opts.workers,
      onProgress: (p) => progress.update(p),
    });
    progress.stop();
    for (const p of r.problems) console.error(`filesync: ${p.path}: ${p.message}`);
    if (opts.json) {
      printJson({
        root: toHex(r.root),
        files: r.files,
        dirs: r.dirs,
        symlinks: r.symlinks,
        bytes: r.bytes,
        hashedFiles: r.hashedFiles,
        hashedBytes: r.hashedBytes,
        removed: r.removed,
        problems: r.problems,
        durationMs: r.durationMs,
      });
    } else {
      console.log(
        `${formatCount(r.files)} files, ${formatCount(r.dirs)} directories, ` +
          `${formatCount(r.symlinks)} symlinks, ${formatBytes(r.bytes)} ` +
          `(read ${formatCount(r.hashedFiles)} changed files, ${formatBytes(r.hashedBytes)}, ` +
          `in ${formatDuration(r.durationMs)})`,
      );
      console.log(`root ${toHex(r.root)}`);
    }
    return r.problems.length > 0 ? 1 : 0;
  } finally {
    progress.stop();
    await store.close();
  }
}
