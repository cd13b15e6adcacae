/** `filesync invite <dir> [--ttl 1h] [--once]`: print a new invite from the running node. */
import { callControl } from "../sync/control.ts";
import { CliError, requireDirectory } from "./errors.ts";
import { DATA_DIR_NAME } from "../store/mod.ts";

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "1h", "7d" -> milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd])$/.exec(text.trim());
  if (!m || Number(m[1]) <= 0) {
    throw new CliError(`bad duration ${JSON.stringify(text)}: use a number and s, m, h or d`, 2);
  }
  return Math.round(Number(m[1]) * UNIT_MS[m[2]]);
}

export async function inviteCommand(
  dir: string,
  opts: { ttl?: string; once?: boolean },
): Promise<number> {
  const root = await requireDirectory(dir);
  const ttlMs = opts.ttl === undefined ? undefined : parseDuration(opts.ttl);
  const r = await callControl<{ invite: string }>(
    `${root}/${DATA_DIR_NAME}`,
    "POST",
    "/invite",
    { ttlMs, once: opts.once ?? false },
  );
  console.log(r.invite);
  return 0;
}
