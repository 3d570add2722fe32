"""CPU and memory of one replay, split by process, and where the time goes (py-spy shares).

replay_bench.py compares programs; this looks inside netsensor. It runs `netsensor replay`
in this process and reports wall seconds, the replay process's CPU and peak RSS, and the
same for the EVE worker when `replay.eve_process` is on. `--dict-flow-events` puts back
the one-dict-per-flow + json formatting of flow events that replay used before the bulk
writer (the "before" of docs/performance.md). `--shares RAW` instead summarises a
`py-spy record -f raw` file: the share of samples in which each function was on the stack.

    python3 bench/replay_cpu.py bench/data/mixed.pcap
    python3 bench/replay_cpu.py bench/data/mixed.pcap --dict-flow-events
    python3 bench/replay_cpu.py bench/data/mixed.pcap -c bench/netsensor-eve-process.yaml
    py-spy record -r 300 -f raw -o /tmp/spy.txt -- python3 -m sensor.cli replay -q \\
        -l /tmp/out bench/data/mixed.pcap && python3 bench/replay_cpu.py --shares /tmp/spy.txt
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def shares(raw_path: str, top: int) -> None:
    """Print the inclusive share of each function in a py-spy raw (collapsed) file."""
    total = 0
    incl: collections.Counter[str] = collections.Counter()
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            n = int(count)
            total += n
            seen = set()
            for frame in stack.split(";"):
                name = re.sub(r":\d+\)$", ")", frame)
                if name not in seen:
                    seen.add(name)
                    incl[name] += n
    print(f"{total} samples")
    for name, n in incl.most_common(top):
        print(f"{100 * n / total:5.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcap", nargs="?")
    ap.add_argument("-c", "--config")
    ap.add_argument("--dict-flow-events", action="store_true",
                    help="format flow events one dict per flow (the code before)")
    ap.add_argument("--shares", metavar="RAW", help="summarise a py-spy raw file instead")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    if args.shares:
        shares(args.shares, args.top)
        return 0
    if not args.pcap:
        ap.error("a pcap is needed (or --shares)")
    import sensor.pipeline as pipeline_mod
    from sensor import cli
    from sensor.output import eve

    if args.dict_flow_events:
        pipeline_mod.flow_events = (  # type: ignore[assignment]
            lambda ended, extra=None, cid=True, seed=0:
            eve.flow_events_dicts(ended, extra, cid, seed))
    with tempfile.TemporaryDirectory(prefix="replay-cpu-") as logdir:
        start = time.perf_counter()
        rc = cli.main(["replay", "-q", "-l", logdir, args.pcap]
                      + (["-c", args.config] if args.config else []))
        wall = time.perf_counter() - start
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"exit {rc}  wall {wall:.2f} s  replay process: CPU {me.ru_utime + me.ru_stime:.2f} s, "
          f"peak RSS {me.ru_maxrss // 1024} MiB  EVE worker: CPU "
          f"{kids.ru_utime + kids.ru_stime:.2f} s, peak RSS {kids.ru_maxrss // 1024} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
