/**
 * /filesync/session/1: request/response calls from a client (a one-shot `push` or `pull`
 * admitted through /filesync/client/1) or a member to a member. The network layer knows only
 * numbered calls with a method name and opaque bytes; what each method means is the daemon's
 * business (it decodes bodies strictly, as it would any peer input).
 *
 * One stream carries one call at a time: the client writes `call`, the server answers with
 * `result` or `error` carrying the same id. A stream idle for SESSION_IDLE_MS is closed.
 */
import { sessionCodec, type SessionMessage } from "./codec.ts";
import { deadline } from "./deadline.ts";
import { WireDecodeError } from "./errors.ts";
import { FramedStream } from "./framed_stream.ts";
import type { Host } from "./host.ts";

/** Protocol id of client sessions. */
export const SESSION_PROTOCOL = "/filesync/session/1";
/** A server closes a session stream after this long without a call, ms. */
const SESSION_IDLE_MS = 120_000;

type SessionStream = FramedStream<SessionMessage, SessionMessage>;

/** A failed call, with a short machine-readable code ("no-quorum", "conflict", ...). */
export class SessionError extends Error {
  override name = "SessionError";
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Answers one call: resolves to the result body, or throws (SessionError keeps its code). */
export type SessionHandler = (
  peer: string,
  method: string,
  body: Uint8Array,
) => Promise<Uint8Array>;

/** Serve sessions to members and admitted clients. */
export async function serveSession(host: Host, handler: SessionHandler): Promise<void> {
  await host.handle(SESSION_PROTOCOL, async (stream, peer) => {
    const fs: SessionStream = new FramedStream(stream, sessionCodec, sessionCodec);
    try {
      while (true) {
        const idle = deadline(SESSION_IDLE_MS);
        let msg: SessionMessage | null;
        try {
          msg = await fs.read(idle.signal);
        } finally {
          idle.clear();
        }
        if (msg === null) break;
        if (!host.gate.isMember(peer)) {
          if (!host.gate.isClient(peer)) throw new Error("no longer a member or client");
          host.gate.renewClient(peer);
        }
        if (msg.type !== "call") {
          throw new WireDecodeError("unknown-type", `unexpected ${msg.type} from a client`);
        }
        try {
          const body = await handler(peer, msg.method, msg.body);
          await fs.write({ type: "result", id: msg.id, body });
        } catch (err) {
          const code = err instanceof SessionError ? err.code : "internal";
          const message = String((err as Error)?.message ?? err).slice(0, 1024);
          await fs.write({ type: "error", id: msg.id, code, message });
        }
      }
      await fs.close();
    } catch (err) {
      if (err instanceof WireDecodeError) {
        host.logger.warn(`session from ${peer}: ${err.message}`);
      }
      fs.abort(err as Error);
    }
  }, {
    membersOnly: true,
    allowClients: true,
    maxInboundStreams: 8,
    maxOutboundStreams: 8,
  });
}

/** The calling side of one session stream. */
export class SessionClient {
  #next = 1;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly fs: SessionStream, readonly peer: string) {}

  /** Open a session with `peer` (which must admit us: member or client). */
  static async open(host: Host, peer: string, signal?: AbortSignal): Promise<SessionClient> {
    const stream = await host.openStream(peer, SESSION_PROTOCOL, { signal });
    return new SessionClient(new FramedStream(stream, sessionCodec, sessionCodec), peer);
  }

  /**
   * Call `method` and resolve to its result body; a server-side failure rejects with a
   * SessionError carrying the server's code. Calls on one client run one after another.
   */
  call(method: string, body: Uint8Array, signal?: AbortSignal): Promise<Uint8Array> {
    const run = this.#queue.then(() => this.#call(method, body, signal));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #call(method: string, body: Uint8Array, signal?: AbortSignal): Promise<Uint8Array> {
    const id = this.#next++;
    await this.fs.write({ type: "call", id, method, body }, signal);
    const answer = await this.fs.read(signal);
    if (answer === null) throw new SessionError("closed", `${this.peer} closed the session`);
    if (answer.id !== id || answer.type === "call") {
      throw new SessionError("protocol", `${this.peer} answered out of turn`);
    }
    if (answer.type === "error") throw new SessionError(answer.code, answer.message);
    return answer.body;
  }

  /** End the session. */
  async close(): Promise<void> {
    await this.fs.close().catch(() => this.fs.abort(new Error("closing")));
  }
}
