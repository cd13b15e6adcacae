/**
 * The command line: parses arguments (commander) and dispatches to one file per command.
 * `main(args)` returns the exit code instead of exiting, so tests can call it.
 */
import { Command, CommanderError, InvalidArgumentError } from "commander";
import { reportError } from "./errors.ts";
// Each command's module is imported when it runs: `invite` and `status` then load no libp2p
// (0.2 s of every start), which cron jobs and the join step of a new node wait for.
import { parseLogLevel } from "../sync/log.ts";

export const VERSION = "0.1.0";

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new InvalidArgumentError("must be a non-negative integer");
  }
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError("must be a positive integer");
  }
  return n;
}

/** Build the command tree; each action stores its exit code in `result`. */
function buildProgram(result: { code: number }): Command {
  const program = new Command("filesync")
    .description("Keep a directory identical across the nodes of a cluster.")
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError("(run filesync --help for usage)");

  program.command("scan")
    .description("index a directory: chunk changed files, record chunk locations, print the root")
    .argument("<dir>", "directory to scan")
    .option("--json", "print a machine-readable summary")
    .option(
      "--workers <n>",
      "hash worker threads; 0 hashes on the main thread (default: number of cores)",
      nonNegativeInt,
    )
    .action(async (dir: string, opts) => {
      result.code = await (await import("./scan.ts")).scanCommand(dir, opts);
    });

  program.command("inspect")
    .description("print a file's chunks and Merkle root")
    .argument("<file>", "file to inspect")
    .option("--json", "print JSON")
    .action(async (file: string, opts) => {
      result.code = await (await import("./inspect.ts")).inspectCommand(file, opts);
    });

  program.command("serve")
    .description("run a node: keep <dir> in sync with the cluster (create one, or --join)")
    .argument("<dir>", "directory to sync")
    .option("--join <invite>", "join the cluster of this invite (first start only)")
    .option(
      "--listen <multiaddr...>",
      "addresses to listen on (default /ip4/0.0.0.0/udp/4001/quic-v1)",
    )
    .option("--tcp", "also listen on and dial TCP (fallback transport)")
    .option(
      "--no-bulk",
      "move file data over libp2p QUIC only, never over TLS-on-TCP bulk connections",
    )
    .option(
      "--rescan <seconds>",
      "full rescan period, a safety net for missed file events",
      positiveInt,
      10,
    )
    .option(
      "--gc-interval <seconds>",
      "how often pack space held by duplicates of file content is reclaimed",
      positiveInt,
      60,
    )
    .option(
      "--keep-versions <n>",
      "old versions kept per path, the current one included (if the leader)",
      positiveInt,
      20,
    )
    .option("--keep-days <days>", "versions newer than this are always kept", nonNegativeInt, 30)
    .option(
      "--prune-interval <seconds>",
      "how often the leader prunes old versions",
      positiveInt,
      600,
    )
    .option("--log-level <level>", "debug, info, warn or error", parseLogLevel, "info")
    .option("--log-format <format>", "text or json", (v: string) => {
      if (v !== "text" && v !== "json") throw new InvalidArgumentError("must be text or json");
      return v;
    }, "text")
    .action(async (dir: string, opts) => {
      result.code = await (await import("./serve.ts")).serveCommand(dir, opts);
    });

  program.command("invite")
    .description("print a new invite from the running node of <dir>")
    .argument("<dir>")
    .option("--ttl <duration>", "lifetime, e.g. 30m, 1h, 7d (default: no expiry)")
    .option("--once", "the invite admits one node only")
    .action(async (dir: string, opts) => {
      result.code = await (await import("./invite.ts")).inviteCommand(dir, opts);
    });

  program.command("status")
    .description("members, roles, leader, term, commit and applied index, connections")
    .argument("<dir>")
    .option("--json", "print JSON")
    .option("--wait", "wait until the directory matches the committed index (exit 0) or time out")
    .option("--timeout <seconds>", "how long --wait waits (default 60)", positiveInt)
    .action(async (dir: string, opts) => {
      result.code = await (await import("./status.ts")).statusCommand(dir, opts);
    });

  program.command("remove")
    .description("remove a member from the cluster (it is refused from then on)")
    .argument("<dir>", "directory of a running member")
    .argument("<peer-id>", "peer id of the member to remove (see filesync status)")
    .action(async (dir: string, peer: string) => {
      result.code = await (await import("./members.ts")).removeMemberCommand(dir, peer);
    });

  program.command("push")
    .description(
      "one-shot: make the cluster's tree (under --prefix) equal to <dir> in one atomic batch, " +
        "durable on a majority; exit 0 once committed",
    )
    .argument("<dir>", "folder to push")
    .requiredOption("--to <invite>", "invite of the cluster (from filesync invite)")
    .option("--prefix <path>", "cluster path the folder maps to (default: the root)")
    .option("--delete", "delete what <dir> lacks under the prefix")
    .option("--timeout <seconds>", "give up after this long (exit 3)", positiveInt, 120)
    .option("--json", "print a machine-readable summary")
    .action(async (dir: string, opts) => {
      result.code = await (await import("./oneshot.ts")).pushCommand(dir, opts);
    });

  program.command("pull")
    .description(
      "one-shot: make <dir> equal to one committed version of the cluster's tree (under --prefix)",
    )
    .argument("<dir>", "folder to write (created if missing)")
    .requiredOption("--from <invite>", "invite of the cluster (from filesync invite)")
    .option("--prefix <path>", "cluster path to pull (default: the root)")
    .option("--at <version>", "a version number, snapshot label or time (default: the latest)")
    .option("--keep-extra", "keep local entries the version lacks")
    .option("--timeout <seconds>", "give up after this long (exit 3)", positiveInt, 120)
    .option("--json", "print a machine-readable summary")
    .action(async (dir: string, opts) => {
      result.code = await (await import("./oneshot.ts")).pullCommand(dir, opts);
    });

  program.command("log")
    .description("the retained versions of a path in the cluster, newest first")
    .argument("<dir>", "directory of a running node")
    .argument("<path>", "path relative to the synced directory")
    .option("--json", "print JSON")
    .action(async (dir: string, path: string, opts) => {
      result.code = await (await import("./history.ts")).logCommand(dir, path, opts);
    });

  program.command("restore")
    .description("commit a path (file or directory) as it was at an older version")
    .argument("<dir>", "directory of a running node")
    .argument("<path>", "path relative to the synced directory")
    .requiredOption("--at <version>", "a version number, snapshot label or time (ISO 8601)")
    .option("--json", "print JSON")
    .action(async (dir: string, path: string, opts) => {
      result.code = await (await import("./history.ts")).restoreCommand(dir, path, opts);
    });

  const snapshot = program.command("snapshot").description("named snapshots of a directory");
  snapshot.command("create")
    .description("scan the directory and record its tree as a snapshot")
    .argument("<dir>")
    .argument("[label]", "a unique name for the snapshot")
    .option("--json", "print JSON")
    .action(async (dir: string, label: string | undefined, opts) => {
      result.code = await (await import("./snapshot.ts")).snapshotCreateCommand(dir, label, opts);
    });
  snapshot.command("list")
    .description("list snapshots, oldest first")
    .argument("<dir>")
    .option("--json", "print JSON")
    .action(async (dir: string, opts) => {
      result.code = await (await import("./snapshot.ts")).snapshotListCommand(dir, opts);
    });
  snapshot.command("diff")
    .description("paths added, removed and changed between two snapshots (label or id)")
    .argument("<dir>")
    .argument("<a>")
    .argument("<b>")
    .option("--json", "print JSON")
    .action(async (dir: string, a: string, b: string, opts) => {
      result.code = await (await import("./snapshot.ts")).snapshotDiffCommand(dir, a, b, opts);
    });

  return program;
}

/** Run the CLI with `args` (without the program name); resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const result = { code: 0 };
  const program = buildProgram(result);
  try {
    await program.parseAsync(args, { from: "user" });
    return result.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has printed its own message (usage errors, --help, --version).
      return e.exitCode === 0 ? 0 : 2;
    }
    return reportError(e);
  }
}
