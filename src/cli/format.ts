/** Human-readable numbers for command output. */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${UNITS[i]}`;
}

/** 12345 -> "12,345". */
export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}

/** Milliseconds -> "850 ms" or "2.3 s". */
export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Print a value as pretty JSON on stdout (Uint8Array hashes must be hex already). */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}
