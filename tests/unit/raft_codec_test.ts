/** The raft wire codec round-trips every field and rejects malformed bytes with typed errors. */
import assert from "node:assert/strict";
import { encode as cborEncode } from "cbor-x";
import {
  decodeMessage,
  decodeMessages,
  encodeMessage,
  encodeMessages,
  EntryType,
  type Message,
  MessageType,
  RaftError,
} from "../../src/raft/mod.ts";

const base: Message = {
  type: MessageType.App,
  from: "12D3KooWabc",
  to: "12D3KooWdef",
  term: 7,
  logTerm: 6,
  index: 41,
  commit: 40,
  entries: [
    { index: 42, term: 7, type: EntryType.Normal, data: new Uint8Array([1, 2, 3]) },
    { index: 43, term: 7, type: EntryType.ConfChange, data: new Uint8Array([9]) },
  ],
  reject: false,
  rejectHint: 0,
  context: null,
  snapshot: null,
};

const isDecode = (e: unknown) => e instanceof RaftError && e.code === "Decode";

Deno.test("raft codec: messages round-trip, including snapshot pieces and contexts", () => {
  const snap: Message = {
    ...base,
    type: MessageType.Snap,
    entries: [],
    context: new Uint8Array([5, 5]),
    reject: true,
    rejectHint: 17,
    snapshot: {
      meta: { index: 100, term: 6, config: { voters: ["a", "b"], learners: ["c"] } },
      size: 10,
      offset: 4,
      data: new Uint8Array([1, 2, 3, 4, 5, 6]),
    },
  };
  for (const m of [base, snap]) assert.deepEqual(decodeMessage(encodeMessage(m)), m);
  assert.deepEqual(decodeMessages(encodeMessages([base, snap])), [base, snap]);
});

Deno.test("raft codec: malformed input is rejected with a Decode error", () => {
  const good = encodeMessage(base);
  assert.throws(() => decodeMessage(good.subarray(0, good.length - 3)), isDecode);
  assert.throws(() => decodeMessage(new Uint8Array([0xff, 0x00])), isDecode);
  const tamper = (i: number, v: unknown) => {
    const arr: unknown[] = [
      1,
      base.type,
      base.from,
      base.to,
      7,
      6,
      41,
      40,
      [],
      false,
      0,
      null,
      null,
    ];
    arr[i] = v;
    return new Uint8Array(cborEncode(arr));
  };
  assert.throws(() => decodeMessage(tamper(0, 2)), isDecode); // version
  assert.throws(() => decodeMessage(tamper(1, 99)), isDecode); // type
  assert.throws(() => decodeMessage(tamper(2, 5)), isDecode); // from
  assert.throws(() => decodeMessage(tamper(4, -1)), isDecode); // term
  assert.throws(() => decodeMessage(tamper(4, 1.5)), isDecode);
  assert.throws(() => decodeMessage(tamper(8, [[1, 1, 0, "text"]])), isDecode); // entry data
  assert.throws(() => decodeMessage(tamper(8, [[1, 1, 7, new Uint8Array()]])), isDecode);
  assert.throws(() => decodeMessage(tamper(9, 1)), isDecode); // reject
  assert.throws(() => decodeMessage(tamper(11, "ctx")), isDecode);
  assert.throws(
    () => decodeMessage(tamper(12, [1, 1, ["a"], [], 3, 2, new Uint8Array(5)])),
    isDecode,
  ); // piece past the end
  assert.throws(() => decodeMessages(new Uint8Array(cborEncode([1, [42]]))), isDecode);
});
