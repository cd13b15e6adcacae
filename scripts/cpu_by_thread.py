#!/usr/bin/env python3
"""CPU seconds used by running FileSync nodes, per node and per thread name (Linux /proc).

Samples every 0.1 s until the watched processes are gone (or --seconds pass) and prints each
thread group's total: the JS main thread ("deno"), QUIC threads ("tokio-rt-w"), the file system
thread pool ("tokio-runt"), Deno KV's SQLite thread ("sw-0"), scan workers, the watcher. A
node is a process whose command line holds " serve "; it is named A unless it has "--join".

Usage: python3 scripts/cpu_by_thread.py [--seconds 60] [--match " serve "]
Start it, then the run to measure (for example a bench); it waits for the processes to appear.
"""
import argparse
import os
import time

HZ = os.sysconf("SC_CLK_TCK")


def sample(match):
    """(node, tid, thread name) -> CPU ticks so far, for every matching process."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        except OSError:
            continue
        if match not in cmd:
            continue
        node = f"{'B' if '--join' in cmd else 'A'}:{pid}"
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                stat = open(f"/proc/{pid}/task/{tid}/stat").read()
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2:].split()
                out[(node, tid, name)] = int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass  # exited meanwhile
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--match", default=" serve ")
    args = ap.parse_args()
    last = {}
    seen = False
    start = time.time()
    while time.time() - start < args.seconds:
        now = sample(args.match)
        if now:
            seen = True
        elif seen:
            break
        last.update(now)  # keeps threads that ended (scan workers) at their last reading
        time.sleep(0.1)
    totals = {}
    for (node, _tid, name), ticks in last.items():
        key = (node, name[:10])
        totals[key] = totals.get(key, 0) + ticks
    for node in sorted({n for n, _ in totals}):
        rows = sorted(((t, name) for (n, name), t in totals.items() if n == node), reverse=True)
        print(f"{node}: {sum(t for t, _ in rows) / HZ:.2f} CPU-s")
        for ticks, name in rows:
            print(f"  {name:<12}{ticks / HZ:6.2f}")


if __name__ == "__main__":
    main()
