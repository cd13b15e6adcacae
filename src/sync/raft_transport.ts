/**
 * Raft's Transport over the network's message channel (/filesync/raft/1). Raft messages are
 * encoded one per frame element; inbound messages are decoded strictly, and a message whose
 * `from` is not the authenticated peer that sent it is dropped: a member cannot speak for
 * another.
 */
import type { MessageChannel, NetLogger } from "../net/mod.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
  type NodeId,
  type Transport,
} from "../raft/mod.ts";

/** FILESYNC_TRACE_RAFT=1 logs every raft message at debug level (for debugging a cluster). */
const TRACE = Deno.env.get("FILESYNC_TRACE_RAFT") === "1";

function describe(ms: readonly Message[]): string {
  return ms.map((m) =>
    `${m.type}(t${m.term} i${m.index} lt${m.logTerm} c${m.commit} n${m.entries.length}${
      m.reject ? " rej" : ""
    })`
  ).join(" ");
}

/** Adapts a MessageChannel to raft's Transport interface. */
export class ChannelRaftTransport implements Transport {
  #handler: ((from: NodeId, messages: readonly Message[]) => void) | null = null;
  #channel: MessageChannel | null = null;
  /** Messages refused on receipt (malformed or spoofed), for status output. */
  rejected = 0;

  constructor(private readonly logger: NetLogger) {}

  /** Attach the channel once it is open (the channel needs `deliver` as its handler). */
  attach(channel: MessageChannel): void {
    this.#channel = channel;
  }

  send(to: NodeId, messages: readonly Message[]): void {
    if (!this.#channel || messages.length === 0) return;
    // Raft tolerates loss: a dropped batch (peer unreachable, queue full) is retried by raft.
    const sent = this.#channel.send(to, messages.map(encodeMessage));
    if (TRACE) {
      this.logger.info?.(`raft -> ${to.slice(-6)} ${sent ? "" : "DROPPED "}${describe(messages)}`);
    }
  }

  onMessage(handler: (from: NodeId, messages: readonly Message[]) => void): void {
    this.#handler = handler;
  }

  /** Hand a batch received from `from` to raft. */
  deliver(from: string, batch: Uint8Array[]): void {
    const messages: Message[] = [];
    for (const bytes of batch) {
      let m: Message;
      try {
        m = decodeMessage(bytes);
      } catch (e) {
        this.rejected++;
        this.logger.warn(`raft message from ${from} refused: ${(e as Error).message}`);
        continue;
      }
      if (m.from !== from) {
        this.rejected++;
        this.logger.warn(`raft message from ${from} claims to be from ${m.from}; dropped`);
        continue;
      }
      messages.push(m);
    }
    if (TRACE) this.logger.info?.(`raft <- ${from.slice(-6)} ${describe(messages)}`);
    if (messages.length > 0) this.#handler?.(from, messages);
  }

  close(): void {
    void this.#channel?.close();
  }
}
