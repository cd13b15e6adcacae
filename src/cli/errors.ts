/**
 * How the CLI reports failure: one clear line on stderr and a non-zero exit, never a stack
 * trace (set FILESYNC_DEBUG=1 to see one).
 */

/** A failure whose message is meant for the user as it is. */
export class CliError extends Error {
  override name = "CliError";
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

/** A one-line, user-facing description of any error. */
export function describeError(e: unknown): string {
  if (e instanceof CliError) return e.message;
  if (e instanceof Deno.errors.NotFound) return `not found: ${stripOsPrefix(e.message)}`;
  if (e instanceof Deno.errors.PermissionDenied) {
    return `permission denied: ${stripOsPrefix(e.message)}`;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Deno's messages read "No such file or directory (os error 2): stat '/x'"; keep them short. */
function stripOsPrefix(message: string): string {
  return message.replace(/\s*\(os error \d+\)/, "");
}

/** Print an error the way every command does and return its exit code. */
export function reportError(e: unknown): number {
  console.error(`filesync: error: ${describeError(e)}`);
  if (Deno.env.get("FILESYNC_DEBUG") && e instanceof Error && e.stack) console.error(e.stack);
  return e instanceof CliError ? e.exitCode : 1;
}

/** Resolve a directory argument, failing clearly if it is missing or not a directory. */
export async function requireDirectory(dir: string): Promise<string> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CliError(`directory ${dir} does not exist`);
    throw new CliError(`cannot access ${dir}: ${describeError(e)}`);
  }
  if (!info.isDirectory) throw new CliError(`${dir} is not a directory`);
  return await Deno.realPath(dir);
}
