/**
 * Membership: applying a change to a configuration, encoding changes into log entries, and the
 * quorum arithmetic the core uses for elections, commits and ReadIndex.
 *
 * Changes are single-server (Raft dissertation §4.1): each adds or removes at most one voter, so
 * any majority of the old voter set intersects any majority of the new one and no joint
 * configuration is needed. Learners are added first (they catch up without affecting quorums)
 * and then promoted, which is the "one voter at a time" step.
 */
import { cborDecode, cborEncode } from "../wire/mod.ts";
import {
  type ConfChange,
  EMPTY_CONFIG,
  type MembershipConfig,
  type NodeId,
  RaftError,
} from "./types.ts";

/** Why a change cannot be applied to a configuration, or null if it can. */
export function validateConfChange(config: MembershipConfig, cc: ConfChange): string | null {
  switch (cc.type) {
    case "init":
      if (config.voters.length > 0 || config.learners.length > 0) {
        return "init is only valid on an empty configuration";
      }
      if (cc.voters.length === 0) return "init needs at least one voter";
      if (new Set(cc.voters).size !== cc.voters.length) return "init lists a voter twice";
      return null;
    case "addLearner":
      if (config.voters.includes(cc.node)) return `${cc.node} is already a voter`;
      if (config.learners.includes(cc.node)) return `${cc.node} is already a learner`;
      return null;
    case "promote":
      if (!config.learners.includes(cc.node)) return `${cc.node} is not a learner`;
      return null;
    case "remove":
      if (config.voters.includes(cc.node)) {
        return config.voters.length === 1 ? "cannot remove the last voter" : null;
      }
      if (config.learners.includes(cc.node)) return null;
      return `${cc.node} is not a member`;
  }
}

/**
 * The configuration after `cc`. An invalid change leaves the configuration as it is: every node
 * computes the same result from the same log, so skipping is deterministic and safe (the leader
 * rejects invalid changes before they reach the log anyway).
 */
export function applyConfChange(config: MembershipConfig, cc: ConfChange): MembershipConfig {
  if (validateConfChange(config, cc) !== null) return config;
  switch (cc.type) {
    case "init":
      return { voters: [...cc.voters].sort(), learners: [] };
    case "addLearner":
      return { voters: config.voters, learners: [...config.learners, cc.node].sort() };
    case "promote":
      return {
        voters: [...config.voters, cc.node].sort(),
        learners: config.learners.filter((n) => n !== cc.node),
      };
    case "remove":
      return {
        voters: config.voters.filter((n) => n !== cc.node),
        learners: config.learners.filter((n) => n !== cc.node),
      };
  }
}

/** Encode a change as the data of a ConfChange entry. */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  return cborEncode(cc);
}

/** Decode and validate the data of a ConfChange entry. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  let v: unknown;
  try {
    v = cborDecode(data);
  } catch (e) {
    throw new RaftError("Decode", `conf change: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null) throw new RaftError("Decode", "conf change: not a map");
  const o = v as Record<string, unknown>;
  const isId = (x: unknown): x is string =>
    typeof x === "string" && x.length > 0 && x.length <= 256;
  if (o.type === "init") {
    if (!Array.isArray(o.voters) || !o.voters.every(isId)) {
      throw new RaftError("Decode", "conf change: bad voters");
    }
    return { type: "init", voters: o.voters as string[] };
  }
  if (o.type === "addLearner" || o.type === "promote" || o.type === "remove") {
    if (!isId(o.node)) throw new RaftError("Decode", "conf change: bad node id");
    return { type: o.type, node: o.node };
  }
  throw new RaftError("Decode", `conf change: unknown type ${String(o.type)}`);
}

/** Every member, voters first. */
export function members(config: MembershipConfig): NodeId[] {
  return [...config.voters, ...config.learners];
}

export function isVoter(config: MembershipConfig, id: NodeId): boolean {
  return config.voters.includes(id);
}

/** Votes needed to win among `n` voters. */
export function majority(n: number): number {
  return Math.floor(n / 2) + 1;
}

/**
 * The highest index that a majority of voters has reached, given each voter's match index.
 * Voters missing from `match` count as 0.
 */
export function quorumIndex(config: MembershipConfig, match: (id: NodeId) => number): number {
  const n = config.voters.length;
  if (n === 0) return 0;
  const xs = config.voters.map(match).sort((a, b) => b - a);
  return xs[majority(n) - 1];
}

/** "won", "lost" or "pending" given the votes recorded so far. */
export function voteResult(
  config: MembershipConfig,
  votes: ReadonlyMap<NodeId, boolean>,
): "won" | "lost" | "pending" {
  let granted = 0;
  let rejected = 0;
  for (const v of config.voters) {
    const r = votes.get(v);
    if (r === true) granted++;
    else if (r === false) rejected++;
  }
  const need = majority(config.voters.length);
  if (granted >= need) return "won";
  if (config.voters.length - rejected < need) return "lost";
  return "pending";
}

export function configEquals(a: MembershipConfig, b: MembershipConfig): boolean {
  const eq = (x: readonly string[], y: readonly string[]) => {
    if (x.length !== y.length) return false;
    const sx = [...x].sort();
    const sy = [...y].sort();
    return sx.every((v, i) => v === sy[i]);
  };
  return eq(a.voters, b.voters) && eq(a.learners, b.learners);
}

export { EMPTY_CONFIG };
