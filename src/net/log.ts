/**
 * Where the network layer reports what an operator may want to know: misbehaving peers,
 * refused streams, reconnects. The daemon passes its own logger; the default writes to stderr.
 */

/** A minimal logging sink. */
export interface NetLogger {
  warn(message: string): void;
  info?(message: string): void;
}

/** Log warnings to stderr, drop info. */
export function consoleLogger(): NetLogger {
  return { warn: (m) => console.error(`[net] ${m}`) };
}

/** A logger that remembers everything (tests assert on it). */
export function memoryLogger(): NetLogger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    warn: (m) => lines.push(`warn: ${m}`),
    info: (m) => lines.push(`info: ${m}`),
  };
}
