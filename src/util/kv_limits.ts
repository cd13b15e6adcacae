/** Deno KV's limits that several layers read against. */

/** Keys one `Deno.Kv.getMany` call takes at most. */
export const KV_GET_MANY = 10;

/**
 * Entries per round trip when a whole prefix is listed: Deno KV's default of 100 made loading
 * 20,000 records take half again as long as with 1,000.
 */
export const LIST_ALL_BATCH = 1000;
