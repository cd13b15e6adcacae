/**
 * The replicated state machine the simulation drives: named registers with write and
 * compare-and-set, plus client sessions so a command delivered twice (the network duplicates
 * forwarded proposals) takes effect once, as the Raft dissertation (§6.3) prescribes.
 */
import type { Entry } from "../../src/raft/mod.ts";

export type Command =
  | {
    readonly c: string;
    readonly s: number;
    readonly k: string;
    readonly o: "w";
    readonly v: string;
  }
  | {
    readonly c: string;
    readonly s: number;
    readonly k: string;
    readonly o: "cas";
    readonly e: string | null;
    readonly v: string;
  }
  | { readonly c: string; readonly s: number; readonly k: ""; readonly o: "probe"; readonly v: "" };

export type CommandResult = "ok" | boolean;

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeCommand(c: Command): Uint8Array {
  return enc.encode(JSON.stringify(c));
}

export function decodeCommand(data: Uint8Array): Command | null {
  if (data.length === 0) return null;
  return JSON.parse(dec.decode(data)) as Command;
}

export class RegisterMachine {
  values = new Map<string, string>();
  sessions = new Map<string, { s: number; r: CommandResult }>();

  /** Apply a committed normal entry; returns the command and its result (null for no-ops). */
  apply(e: Entry): { cmd: Command; result: CommandResult } | null {
    const cmd = decodeCommand(e.data);
    if (!cmd) return null;
    const sess = this.sessions.get(cmd.c);
    if (sess && cmd.s <= sess.s) {
      return { cmd, result: cmd.s === sess.s ? sess.r : "ok" };
    }
    let result: CommandResult = "ok";
    if (cmd.o === "w") this.values.set(cmd.k, cmd.v);
    else if (cmd.o === "cas") {
      const cur = this.values.get(cmd.k) ?? null;
      result = cur === cmd.e;
      if (result) this.values.set(cmd.k, cmd.v);
    }
    this.sessions.set(cmd.c, { s: cmd.s, r: result });
    return { cmd, result };
  }

  read(key: string): string | null {
    return this.values.get(key) ?? null;
  }

  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify({
      v: [...this.values].sort(),
      s: [...this.sessions].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
    }));
  }

  restore(data: Uint8Array): void {
    const o = JSON.parse(dec.decode(data)) as {
      v: [string, string][];
      s: [string, { s: number; r: CommandResult }][];
    };
    this.values = new Map(o.v);
    this.sessions = new Map(o.s);
  }

  /** Fingerprint of the register values (sessions follow from the same apply sequence). */
  stateKey(): string {
    let out = "";
    for (const [k, v] of [...this.values].sort()) out += `${k}=${v};`;
    return out;
  }
}
