/** Deno KV's limits that several layers read against. */

/** Keys one `Deno.Kv.getMany` call takes at most. */
export const KV_GET_MANY = 10;
