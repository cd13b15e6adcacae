/** The node identity: created once with mode 0600, reloaded unchanged, refused when unsafe. */
import assert from "node:assert/strict";
import { IdentityError, loadOrCreateIdentity } from "../../src/net/mod.ts";

Deno.test("the identity is created 0600 in a 0700 directory and reloaded unchanged", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/.filesync/identity.key`;
    const a = await loadOrCreateIdentity(path);
    assert.match(a.peerId, /^12D3KooW/);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/.filesync`)).mode! & 0o077, 0);
    const b = await loadOrCreateIdentity(path);
    assert.equal(b.peerId, a.peerId);
    assert.deepEqual(b.privateKey.raw, a.privateKey.raw);
    const names = [...Deno.readDirSync(`${dir}/.filesync`)].map((e) => e.name);
    assert.deepEqual(names, ["identity.key"], "no temporary files left behind");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("concurrent first starts agree on one identity", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ids = await Promise.all(
      Array.from({ length: 4 }, () => loadOrCreateIdentity(`${dir}/id.key`)),
    );
    assert.equal(new Set(ids.map((i) => i.peerId)).size, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an identity readable by others, or corrupt, is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/id.key`;
    await loadOrCreateIdentity(path);
    await Deno.chmod(path, 0o644);
    await assert.rejects(loadOrCreateIdentity(path), (err: unknown) => {
      assert.ok(err instanceof IdentityError);
      assert.match(err.message, /chmod 600/);
      return true;
    });
    await Deno.writeFile(path, new Uint8Array([1, 2, 3]), { mode: 0o600 });
    await Deno.chmod(path, 0o600);
    await assert.rejects(loadOrCreateIdentity(path), /corrupt/);
    await Deno.mkdir(`${dir}/isdir`);
    await assert.rejects(loadOrCreateIdentity(`${dir}/isdir`), IdentityError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
