/** Network helpers shared by the end-to-end tests. */
import { type Host, RAFT_PROTOCOL, raftCodec } from "../../src/net/mod.ts";

/**
 * Whether a raft stream from `host` to `peer` is refused. The server resets such a stream as
 * soon as its protocol is negotiated; QUIC may then drop the negotiation reply too, so the
 * refusal shows either as a failed open or as a stream that ends without a byte.
 */
export async function refused(host: Host, peer: string): Promise<boolean> {
  let stream;
  try {
    stream = await host.openStream(peer, RAFT_PROTOCOL);
  } catch {
    return true;
  }
  try {
    stream.send(raftCodec.encodeFrame({ type: "batch", msgs: [new Uint8Array([1])] }));
  } catch {
    return true;
  }
  let bytes = 0;
  try {
    for await (const m of stream) bytes += m.byteLength;
  } catch {
    return true;
  }
  return bytes === 0;
}
