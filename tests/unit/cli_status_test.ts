/**
 * `filesync status --wait` against a node whose sync pass outlasts the call (a large push
 * waiting for a majority): it waits until its own deadline and says what is left and why; it
 * does not take the busy node for one that is gone.
 */
import assert from "node:assert/strict";
import { type ControlHandlers, startControlServer } from "../../src/sync/control.ts";
import { DATA_DIR_NAME } from "../../src/store/mod.ts";
import { runCli } from "../helpers/cli.ts";

Deno.test({
  name: "status --wait: a sync pass longer than the call is waited for, not taken for a dead node",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "filesync-status-" });
    await Deno.mkdir(`${dir}/${DATA_DIR_NAME}`);
    let release!: () => void;
    const held = new Promise<void>((resolve) => release = resolve);
    const unused = () => Promise.reject(new Error("not used here"));
    const handlers: ControlHandlers = {
      status: () =>
        Promise.resolve({
          sync: {
            pendingUp: 3,
            pendingDown: 0,
            waitingUp: "data not durable on a majority (0 of 1 peers confirmed)",
            waitingDown: null,
          },
        }),
      // The pass runs for longer than the client's per-call default (10 s) would allow.
      sync: async () => {
        await held;
        return { inSync: false, pendingUp: 3, pendingDown: 0, waitingUp: null, waitingDown: null };
      },
      invite: unused,
      removeMember: unused,
      history: unused,
      restore: unused,
      label: unused,
      labels: unused,
    };
    const server = await startControlServer(`${dir}/${DATA_DIR_NAME}`, handlers);
    try {
      const r = await runCli(["status", dir, "--wait", "--timeout", "2"]);
      assert.notEqual(r.code, 0);
      assert.doesNotMatch(r.stderr, /does not answer/);
      assert.match(
        r.stderr,
        /not in sync after 2 s: 3 local changes not committed \(data not durable on a majority.*\).*still catching up with the cluster or running a sync pass/,
      );
    } finally {
      release();
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
