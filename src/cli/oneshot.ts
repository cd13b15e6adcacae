/**
 * `filesync push` and `filesync pull`: the one-shot modes for cron jobs and CI (src/client).
 * On a terminal they draw progress bars and print a summary line; otherwise they are silent
 * but for errors. `--json` prints a machine-readable summary on stdout at the end.
 *
 * Exit codes: 0 done; 1 other failure; 2 usage; 3 the cluster is unreachable, has no quorum or
 * the timeout passed; 4 the invite is bad, expired or refused; 5 a local problem (unreadable
 * file, full disk); 6 refused by the cluster (a path conflict, an invalid path).
 */
import { ClientError, pull, type PullSummary, push, type PushSummary } from "../client/mod.ts";
import { CliError, requireDirectory } from "./errors.ts";
import { formatBytes, formatCount, printJson } from "./format.ts";
import { ByteProgress } from "./progress.ts";

const EXIT_BY_CODE: Record<ClientError["code"], number> = {
  "unreachable": 3,
  "no-quorum": 3,
  "timeout": 3,
  "bad-invite": 4,
  "unreadable": 5,
  "disk": 5,
  "corrupt": 1,
  "conflict": 6,
  "rejected": 6,
  "usage": 2,
  "unknown-outcome": 3,
};

/** Options shared by push and pull. */
interface OneShotFlags {
  prefix?: string;
  timeout: number;
  json?: boolean;
}

/** Normalize a --prefix: no leading or trailing slashes; "" is the root. */
function prefixOf(p: string | undefined): string {
  const s = (p ?? "").replace(/^\/+|\/+$/g, "");
  if (s.split("/").some((n) => n === ".." || n === ".")) {
    throw new CliError("--prefix must not contain . or .. segments", 2);
  }
  return s;
}

/** Run a client operation, turning ClientError into its exit code. */
async function run<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ClientError) throw new CliError(e.message, EXIT_BY_CODE[e.code]);
    throw e;
  }
}

/** `filesync push <dir> --to <invite>`. */
export async function pushCommand(
  dir: string,
  opts: OneShotFlags & { to: string; delete?: boolean },
): Promise<number> {
  const root = await requireDirectory(dir);
  const bars = new Map<string, ByteProgress>();
  let current = "";
  const summary: PushSummary = await run(() =>
    push(root, {
      invite: opts.to,
      prefix: prefixOf(opts.prefix),
      deleteExtra: opts.delete === true,
      timeoutMs: opts.timeout * 1000,
      onSkip: (path, why) => console.error(`filesync: skipped ${path}: ${why}`),
      onProgress: (p) => {
        if (p.phase !== current) {
          bars.get(current)?.stop();
          current = p.phase;
          bars.set(p.phase, new ByteProgress(p.phase === "hash" ? "hashing" : p.phase));
        }
        bars.get(p.phase)!.update({
          filesDone: p.files,
          filesTotal: p.filesTotal,
          bytesDone: p.bytes,
          bytesTotal: p.bytesTotal || p.bytes,
        });
      },
    })
  ).finally(() => bars.get(current)?.stop());
  if (opts.json) printJson(summary);
  else if (Deno.stdout.isTerminal()) {
    console.log(
      summary.changed
        ? `pushed version ${summary.version}: ${summary.put} put, ${summary.mkdir} created, ` +
          `${summary.delete} deleted; sent ${formatCount(summary.objectsSent)} objects ` +
          `(${formatBytes(summary.bytesSent)}) in ${summary.seconds.toFixed(1)} s`
        : `already up to date at version ${summary.version} (${formatCount(summary.files)} files, ${
          formatBytes(summary.bytes)
        })`,
    );
  }
  return 0;
}

/** `filesync pull <dir> --from <invite>`. */
export async function pullCommand(
  dir: string,
  opts: OneShotFlags & { from: string; at?: string; keepExtra?: boolean },
): Promise<number> {
  const bar = new ByteProgress("pull");
  const summary: PullSummary = await run(() =>
    pull(dir, {
      invite: opts.from,
      prefix: prefixOf(opts.prefix),
      at: opts.at ?? "",
      timeoutMs: opts.timeout * 1000,
      keepExtra: opts.keepExtra === true,
      onProgress: (p) =>
        bar.update({
          filesDone: p.files,
          filesTotal: p.filesTotal,
          bytesDone: p.bytes,
          bytesTotal: p.bytesTotal,
        }),
    })
  ).finally(() => bar.stop());
  if (opts.json) printJson(summary);
  else if (Deno.stdout.isTerminal()) {
    console.log(
      `pulled version ${summary.version}: ${formatCount(summary.files)} files ` +
        `(${formatBytes(summary.bytes)}); wrote ${formatCount(summary.written)}, removed ` +
        `${formatCount(summary.removed)}, fetched ${formatBytes(summary.fetchedBytes)} in ` +
        `${summary.seconds.toFixed(1)} s`,
    );
  }
  return 0;
}
