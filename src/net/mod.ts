/**
 * The network layer: a libp2p + QUIC host with a persistent identity and a membership gate,
 * the wire codec, and the three FileSync protocols (join, raft message channel, objects).
 * Other folders import only this file.
 */
export {
  type ConnectionInfo,
  createHost,
  DEFAULT_LISTEN,
  DEFAULT_QUIC_TUNING,
  type HandleOptions,
  type Host,
  type HostOptions,
  type ProtocolHandler,
  type QuicTuning,
} from "./host.ts";
export { type Identity, loadOrCreateIdentity } from "./identity.ts";
export { pinFreePorts } from "./listen_ports.ts";
export {
  BULK_PROTOCOL,
  BulkDialer,
  bulkHostname,
  BulkServer,
  makeTlsIdentity,
  type TlsIdentity,
} from "./bulk.ts";
export { ConnStream, type MessageStream } from "./conn_stream.ts";
export { type AdmissionLimits, DEFAULT_ADMISSION_LIMITS, PeerGate } from "./gate.ts";
export type { RateLimit } from "./rate_limit.ts";
export { consoleLogger, memoryLogger, type NetLogger } from "./log.ts";
export {
  FetchError,
  IdentityError,
  InviteError,
  JoinError,
  NotMemberError,
  PushError,
  WireDecodeError,
  WireEncodeError,
} from "./errors.ts";
export {
  BULK_TICKET_LENGTH,
  bulkCodec,
  type BulkMessage,
  joinRequestCodec,
  joinResponseCodec,
  MAX_OBJECT_SIZE,
  type MemberInfo,
  objectsCodec,
  ProtocolCodec,
  raftCodec,
  SESSION_MAX_BODY,
  sessionCodec,
} from "./codec.ts";
export {
  serveSession,
  SESSION_PROTOCOL,
  SessionClient,
  SessionError,
  type SessionHandler,
} from "./session.ts";
export { FrameDecoder } from "./frame.ts";
export { type Deadline, deadline } from "./deadline.ts";
export {
  FramedStream,
  type FramedStreamOptions,
  StreamEndedError,
  waitForDrain,
} from "./framed_stream.ts";
export { QUIC_READ_SIZE } from "./quic_read_size.ts";
export {
  createInvite,
  type CreateInviteOptions,
  formatInvite,
  type Invite,
  INVITE_PREFIX,
  parseInvite,
} from "./invite.ts";
export {
  CLIENT_PROTOCOL,
  type InviteSecret,
  JOIN_PROTOCOL,
  type JoinAdmission,
  joinCluster,
  type JoinOptions,
  JoinRefusal,
  type JoinRequest,
  type JoinResult,
  type JoinServerOptions,
  joinVia,
  serveJoin,
} from "./join.ts";
export {
  type BatchHandler,
  MessageChannel,
  type MessageChannelOptions,
  type MessageChannelStats,
  openMessageChannel,
  RAFT_PROTOCOL,
} from "./message_channel.ts";
export {
  type ObjectProvider,
  type ObjectReceiver,
  OBJECTS_PROTOCOL,
  type ObjectServerOptions,
  PUSH_WINDOW_LIMIT,
  serveObjects,
} from "./objects_server.ts";
export {
  type FetchOptions,
  type FetchResult,
  ObjectFetcher,
  type ObjectSink,
} from "./objects_client.ts";
export {
  ObjectPusher,
  type ObjectReader,
  type PushOptions,
  type PushResult,
} from "./objects_push.ts";
