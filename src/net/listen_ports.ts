/**
 * Keeping a node's address across restarts when it was told to listen on any free port (port 0).
 *
 * Members reach each other at the addresses in the replicated address book, and a node
 * publishes a new address through Raft. If two nodes restart on new ports at about the same
 * time, each only knows the other's old address; when one of them leads, the other can neither
 * reach it nor get its own new address committed, and stays cut off for good. Rebinding the
 * port a node had before keeps its address what the others know.
 */
import { multiaddr } from "@multiformats/multiaddr";

/** A listen address's transport ("udp" or "tcp"), its family and transport as "ip4 udp", and its port. */
function portOf(addr: string): { transport: string; kind: string; port: number } | null {
  const parts = multiaddr(addr).getComponents();
  const family = parts.find((p) => p.name === "ip4" || p.name === "ip6");
  const transport = parts.find((p) => p.name === "udp" || p.name === "tcp");
  if (!family || !transport?.value) return null;
  return {
    transport: transport.name,
    kind: `${family.name} ${transport.name}`,
    port: Number(transport.value),
  };
}

/**
 * The requested listen addresses with each port 0 replaced by the port the node actually bound
 * for that family and transport (from `bound`, the host's addresses), or null if no port 0 was
 * asked for or a bound port is unknown: then there is nothing to keep.
 */
export function pinFreePorts(
  requested: readonly string[],
  bound: readonly string[],
): string[] | null {
  const ports = new Map<string, number>();
  for (const b of bound) {
    const p = portOf(b);
    if (p && p.port !== 0 && !ports.has(p.kind)) ports.set(p.kind, p.port);
  }
  let pinned = false;
  const out: string[] = [];
  for (const r of requested) {
    const p = portOf(r);
    if (!p || p.port !== 0) {
      out.push(r);
      continue;
    }
    const port = ports.get(p.kind);
    if (port === undefined) return null;
    out.push(r.replace(`/${p.transport}/0`, `/${p.transport}/${port}`));
    pinned = true;
  }
  return pinned ? out : null;
}
