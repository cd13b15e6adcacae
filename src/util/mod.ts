/** Small helpers shared by several layers. */
export { mapLimit } from "./concurrency.ts";
