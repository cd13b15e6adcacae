/** Small helpers shared by several layers. */
export { mapLimit } from "./concurrency.ts";
export { giveBuffer, takeBuffer } from "./buffer_pool.ts";
