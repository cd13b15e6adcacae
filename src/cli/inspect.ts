/** `filesync inspect <file> [--json]`: a file's chunk list and Merkle root. */
import { toHex } from "../chunk/mod.ts";
import { hashFile } from "../sync/mod.ts";
import { CliError } from "./errors.ts";
import { formatBytes, formatCount, printJson } from "./format.ts";

export async function inspectCommand(path: string, opts: { json?: boolean }): Promise<number> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CliError(`file ${path} does not exist`);
    throw e;
  }
  if (!info.isFile) throw new CliError(`${path} is not a regular file`);
  let hashed;
  try {
    hashed = await hashFile(path);
  } catch (e) {
    throw new CliError(`${path}: ${(e as Error).message}`);
  }
  const chunks = hashed.chunks.map((c) => ({
    offset: c.offset,
    length: c.length,
    hash: toHex(c.hash),
  }));
  if (opts.json) {
    printJson({ path, size: hashed.size, root: toHex(hashed.root), chunks });
    return 0;
  }
  console.log(`${path}: ${formatBytes(hashed.size)}, ${formatCount(chunks.length)} chunks`);
  console.log(`root ${toHex(hashed.root)}`);
  for (const c of chunks) {
    console.log(`${String(c.offset).padStart(14)} ${String(c.length).padStart(8)} ${c.hash}`);
  }
  return 0;
}
