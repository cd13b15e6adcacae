/** Small helpers shared by several layers. */
export { Limiter, mapLimit } from "./concurrency.ts";
export { giveBuffer, takeBuffer } from "./buffer_pool.ts";
export { readAt, readBytesAt } from "./read_at.ts";
export { canCopyRanges, copyRange } from "./copy_range.ts";
export { openPositional, type PositionalFile } from "./positional_file.ts";
export { KV_GET_MANY, LIST_ALL_BATCH } from "./kv_limits.ts";
