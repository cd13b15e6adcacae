/**
 * The node's libp2p identity: one Ed25519 key, created on first start and kept in a file only
 * its owner can read (mode 0600). The peer id derived from it is the node's name in the
 * cluster membership, so losing or regenerating it turns the node into a stranger.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import type { PrivateKey } from "@libp2p/interface";
import { dirname } from "node:path";
import { IdentityError } from "./errors.ts";

/** A loaded identity: the private key and its peer id string. */
export interface Identity {
  privateKey: PrivateKey;
  peerId: string;
}

/**
 * Load the identity kept at `path`, or create it (and its directory, mode 0700) when the file
 * does not exist. A file readable by group or others is refused, as ssh refuses such keys: a
 * leaked key lets anyone impersonate this member.
 */
export async function loadOrCreateIdentity(path: string): Promise<Identity> {
  let bytes: Uint8Array | null = null;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw new IdentityError(`identity ${path} is not a regular file`);
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      throw new IdentityError(
        `identity ${path} is accessible by other users (mode ${
          (info.mode & 0o777).toString(8)
        }); run: chmod 600 ${path}`,
      );
    }
    bytes = await Deno.readFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      if (err instanceof IdentityError) throw err;
      throw new IdentityError(`cannot read identity ${path}: ${(err as Error).message}`);
    }
  }
  if (bytes !== null) {
    let privateKey: PrivateKey;
    try {
      privateKey = privateKeyFromProtobuf(bytes);
    } catch (err) {
      throw new IdentityError(`identity ${path} is corrupt: ${(err as Error).message}`);
    }
    if (privateKey.type !== "Ed25519") {
      throw new IdentityError(`identity ${path} holds a ${privateKey.type} key, not Ed25519`);
    }
    return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
  }
  const privateKey = await generateKeyPair("Ed25519");
  if (!(await writePrivate(path, privateKeyToProtobuf(privateKey)))) {
    // Another process created the identity between our stat and our link: use theirs.
    return await loadOrCreateIdentity(path);
  }
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}

/**
 * Write a secret file with mode 0600 from the first byte (never readable by others, even
 * briefly), fsync it, then hard-link it into place so a crash leaves either no key or a whole
 * one. Returns false when a file already exists at `path` (left untouched).
 */
async function writePrivate(path: string, data: Uint8Array): Promise<boolean> {
  const dir = dirname(path);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
  try {
    let written = 0;
    while (written < data.length) written += await file.write(data.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
  // The umask may have cleared bits, never added them; chmod makes the mode exact anyway.
  await Deno.chmod(tmp, 0o600);
  try {
    await Deno.link(tmp, path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return false;
    throw new IdentityError(`cannot create identity ${path}: ${(err as Error).message}`);
  } finally {
    await Deno.remove(tmp);
  }
}
