/**
 * What the sync benches share: the anchor's workload generator, shell commands, and comparing
 * trees (by shape while waiting, by content hash once shapes match).
 */
import { createHash } from "node:crypto";

/** The anchor harness: `--gen-only DIR` writes the deterministic workload. */
export const ANCHOR = new URL("../../shared/anchors/syncthing/run.py", import.meta.url).pathname;

/** The value after `--name` in the command line, or `dflt`. */
export function arg(name: string, dflt: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : dflt;
}

/** Run a command; its stdout, or an error naming it if it fails. */
export async function sh(cmd: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stderr: "inherit" })
    .output();
  if (out.code !== 0) throw new Error(`${cmd.join(" ")} exited ${out.code}`);
  return new TextDecoder().decode(out.stdout);
}

/** Write the anchor's workload (with a large file of `largeMiB`) into `dir`. */
export async function generateWorkload(dir: string, largeMiB: number): Promise<void> {
  await sh(["python3", ANCHOR, "--gen-only", dir, "--large-mib", String(largeMiB)]);
}

/** Sorted list of (path, size) of regular files, `.filesync/` and temp files left out. */
export async function shape(root: string): Promise<string> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(rel ? `${root}/${rel}` : root)) {
      if (e.name === ".filesync" || e.name.startsWith(".filesync-tmp-")) continue;
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(p);
      else if (e.isFile) out.push(`${p}:${(await Deno.stat(`${root}/${p}`)).size}`);
    }
  };
  await walk("");
  return out.sort().join("\n");
}

/** SHA-256 of a file, read in 1 MiB blocks (as the anchor harness's hashlib loop). */
export async function fileHash(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  for (let n = await f.read(buf); n !== null; n = await f.read(buf)) h.update(buf.subarray(0, n));
  return h.digest("hex");
}

/** Content hash of every file (only called once shapes match). */
export async function contentHash(root: string): Promise<string> {
  const h = createHash("sha256");
  for (const line of (await shape(root)).split("\n")) {
    const p = line.slice(0, line.lastIndexOf(":"));
    h.update(`${p}\n${await fileHash(`${root}/${p}`)}\n`);
  }
  return h.digest("hex");
}
