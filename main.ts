/** FileSync's entry point: `filesync <command> ...` (see README.md). */
import { main } from "./src/cli/mod.ts";

if (import.meta.main) {
  // `deno task filesync` / `npm start` run from the project folder; the task passes the
  // caller's directory so relative paths mean what the user typed.
  const callerCwd = Deno.env.get("FILESYNC_CWD");
  if (callerCwd) Deno.chdir(callerCwd);
  Deno.exit(await main(Deno.args));
}
