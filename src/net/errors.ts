/**
 * Typed errors of the network layer. Each carries a machine-readable `code` so callers (the
 * daemon, the CLI) can tell "the peer sent garbage" from "the invite is expired" without
 * matching on message text.
 */

/** Bytes from the wire that are malformed, oversized, truncated or of an unknown type. */
export class WireDecodeError extends Error {
  override name = "WireDecodeError";
  constructor(
    readonly code:
      | "frame-too-large"
      | "truncated"
      | "malformed"
      | "unknown-type"
      | "invalid-field",
    message: string,
  ) {
    super(message);
  }
}

/** A message we were asked to send does not fit its schema (a bug in the caller). */
export class WireEncodeError extends Error {
  override name = "WireEncodeError";
}

/** The node identity file cannot be read, parsed or created safely. */
export class IdentityError extends Error {
  override name = "IdentityError";
}

/** An invite string that cannot be used. */
export class InviteError extends Error {
  override name = "InviteError";
  constructor(readonly code: "malformed" | "expired", message: string) {
    super(message);
  }
}

/** A join attempt that did not make us a member. Nothing was changed on either side. */
export class JoinError extends Error {
  override name = "JoinError";
  constructor(
    readonly code:
      | "unreachable"
      | "rejected"
      | "secret-mismatch"
      | "protocol"
      | "timeout",
    message: string,
  ) {
    super(message);
  }
}

/** A peer that is not a cluster member tried to use a members-only protocol. */
export class NotMemberError extends Error {
  override name = "NotMemberError";
}

/** An object fetch that could not be completed. */
export class FetchError extends Error {
  override name = "FetchError";
}

/**
 * An object push that did not end with the peer confirming that it durably holds every
 * object. The code tells a caller whether to retry, try another peer, or look at local data.
 */
export class PushError extends Error {
  override name = "PushError";
  constructor(
    /** The peer pushed to. */
    readonly peerId: string,
    readonly code:
      /** The stream could not be opened. */
      | "unreachable"
      /** The peer cannot take pushed objects (none accepted there, or its store failed). */
      | "refused"
      /** The peer answered something the protocol does not allow. */
      | "protocol"
      /** The stream was reset or ended before the peer confirmed durability. */
      | "closed"
      /** The peer did not answer in time. */
      | "timeout"
      /** The caller's signal aborted the push. */
      | "aborted"
      /** A local object could not be read, or is damaged or too large. */
      | "read",
    message: string,
  ) {
    super(message);
  }
}
