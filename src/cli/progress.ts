/**
 * Progress bars on a terminal (cli-progress, on stderr); nothing at all when stderr is not a
 * TTY, so scripts and logs stay clean.
 */
import cliProgress from "cli-progress";
import process from "node:process";
import { formatBytes } from "./format.ts";

/** A byte-based progress bar that is a no-op off a terminal. */
export class ByteProgress {
  #bar: cliProgress.SingleBar | null = null;

  constructor(private readonly label: string, enabled = Deno.stderr.isTerminal()) {
    if (!enabled) return;
    this.#bar = new cliProgress.SingleBar({
      format:
        `${label} [{bar}] {percentage}% | {files} files | {done} of {all} | {rate} | ETA {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
    }, cliProgress.Presets.shades_classic);
  }

  /** Report progress; starts the bar on first call. */
  update(p: { filesDone: number; filesTotal: number; bytesDone: number; bytesTotal: number }) {
    if (!this.#bar) return;
    const seconds = (performance.now() - this.#startedAt) / 1000;
    const payload = {
      files: p.filesTotal > 0 ? `${p.filesDone}/${p.filesTotal}` : `${p.filesDone}`,
      done: formatBytes(p.bytesDone),
      all: formatBytes(p.bytesTotal),
      rate: seconds > 0.2 ? `${formatBytes(Math.round(p.bytesDone / seconds))}/s` : "-",
    };
    if (!this.#started) {
      this.#bar.start(Math.max(1, p.bytesTotal), p.bytesDone, payload);
      this.#started = true;
    } else {
      this.#bar.update(p.bytesDone, payload);
    }
  }

  #started = false;
  readonly #startedAt = performance.now();

  /** Remove the bar. */
  stop(): void {
    if (this.#bar && this.#started) this.#bar.stop();
  }
}
