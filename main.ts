/** FileSync's entry point: `filesync <command> ...` (see README.md). */
import { main } from "./src/cli/mod.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
