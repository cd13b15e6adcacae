/**
 * Real `filesync serve` processes on 127.0.0.1 for end-to-end tests: start, read what they
 * print, ask their status, and stop them by PID (only the processes a test started).
 */
import { runCli } from "./cli.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1";

/** A running node process. */
export class NodeProcess {
  #child: Deno.ChildProcess;
  #stdout = "";
  #stderr = "";
  #done: Promise<Deno.CommandStatus>;

  private constructor(readonly dir: string, args: string[]) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--unstable-kv", "-A", MAIN, "serve", dir, "--listen", LISTEN, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#done = this.#child.status;
    this.#pump(this.#child.stdout, (t) => this.#stdout += t);
    this.#pump(this.#child.stderr, (t) => this.#stderr += t);
  }

  async #pump(stream: ReadableStream<Uint8Array>, add: (t: string) => void) {
    const dec = new TextDecoder();
    for await (const piece of stream) add(dec.decode(piece, { stream: true }));
  }

  /** Start `filesync serve dir [...args]` and wait until it serves (or fails). */
  static async start(dir: string, args: string[] = [], timeoutMs = 30_000): Promise<NodeProcess> {
    const node = new NodeProcess(dir, args);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (/^node \S+ of cluster/m.test(node.#stdout)) return node;
      const exited = await Promise.race([node.#done, new Promise((r) => setTimeout(r, 50))]);
      if (exited) {
        await new Promise((r) => setTimeout(r, 50)); // let the pipes drain
        throw new Error(`serve exited early: ${node.#stderr.trim()}`);
      }
    }
    node.kill("SIGKILL");
    throw new Error(`serve did not start within ${timeoutMs} ms: ${node.#stderr}`);
  }

  get pid(): number {
    return this.#child.pid;
  }
  get stdout(): string {
    return this.#stdout;
  }
  get stderr(): string {
    return this.#stderr;
  }

  /** The invite a first node prints. */
  get invite(): string {
    const m = /^invite (\S+)$/m.exec(this.#stdout);
    if (!m) throw new Error("this node printed no invite");
    return m[1];
  }

  /** `filesync status --json` of this node. */
  async status(): Promise<Status> {
    const r = await runCli(["status", this.dir, "--json"]);
    if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  /** Send a signal to this process (only ever one a test started). */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.#child.kill(signal);
    } catch { /* already gone */ }
  }

  /** Stop and wait for exit; SIGKILL after a grace period. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.kill(signal);
    const t = setTimeout(() => this.kill("SIGKILL"), 10_000);
    try {
      return await this.#done;
    } finally {
      clearTimeout(t);
    }
  }
}

/** The shape of `filesync status --json` that tests read. */
export interface Status {
  peerId: string;
  clusterId: string;
  role: string;
  leader: string;
  term: number;
  commit: number;
  applied: number;
  members: { peerId: string; role: string }[];
}

/** Poll `fn` until it returns a truthy value or the time is up (then throw with `what`). */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 20_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** Make `n` fresh temporary directories. */
export async function tempDirs(n: number, prefix = "filesync-e2e-"): Promise<string[]> {
  return await Promise.all(Array.from({ length: n }, () => Deno.makeTempDir({ prefix })));
}
