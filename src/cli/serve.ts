/** `filesync serve <dir> [--join <invite>]`: run a node until interrupted. */
import { Daemon } from "../daemon.ts";
import { type LogFormat, Logger, type LogLevel } from "../sync/mod.ts";
import { requireDirectory } from "./errors.ts";

export interface ServeOptions {
  join?: string;
  listen?: string[];
  tcp?: boolean;
  /** Bulk connections for file data (commander sets false for --no-bulk). */
  bulk?: boolean;
  /** Safety-net rescan period, s. */
  rescan: number;
  /** Pack garbage collection period, s. */
  gcInterval: number;
  /** Retention: versions per path, days, prune period (s). */
  keepVersions: number;
  keepDays: number;
  pruneInterval: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
}

export async function serveCommand(dir: string, opts: ServeOptions): Promise<number> {
  const root = await requireDirectory(dir);
  const log = new Logger(opts.logLevel, opts.logFormat);
  const daemon = await Daemon.start({
    dir: root,
    join: opts.join,
    listen: opts.listen,
    enableTcp: opts.tcp,
    bulk: opts.bulk ?? true,
    logger: log,
    rescanMs: opts.rescan * 1000,
    gcIntervalMs: opts.gcInterval * 1000,
    retention: {
      keepVersions: opts.keepVersions,
      keepMs: opts.keepDays * 86_400_000,
      pruneIntervalMs: opts.pruneInterval * 1000,
    },
  });
  const status = await daemon.status();
  const lines = [`node ${status.peerId} of cluster ${status.clusterId}`];
  for (const a of status.addrs) lines.push(`listening ${a}`);
  if (!opts.join && status.members.length === 1) {
    // A one-member cluster: print an invite so the next node can join right away.
    lines.push(`invite ${daemon.invite({ ttlMs: 24 * 3600_000 })}`);
  }
  // One write, so a reader that sees the first line sees them all.
  console.log(lines.join("\n"));
  const stopped = Promise.withResolvers<void>();
  const onSignal = () => stopped.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  await stopped.promise;
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  await daemon.stop();
  return 0;
}
