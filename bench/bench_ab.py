"""Before and after: ``bench_server.py``'s in-process setups, this tree against another.

On a shared machine one run of ``bench_server.py`` measures ±5–20 % apart from the next, too
coarse to see a change of a few per cent. This runs short benchmark processes alternately
from the two source trees (same interpreter, same installed packages), each reporting the
median ratio of mcp-sessions over the plain SDK within its own run, so both trees see the
same moments of load; the result is the median over the pairs.

Run: .venv/bin/python bench/bench_ab.py BEFORE_TREE [--pairs 8] [--calls 400] [--rounds 5]
  (BEFORE_TREE: e.g. ``git archive <commit> | tar -x -C /tmp/before``)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

#: Run inside each process, from the tree under test.
PROBE = """
import asyncio, contextlib, json, logging, statistics, sys
from bench import bench_server as b
from mcp import Client

async def main(calls, rounds):
    for name in ("httpx", "httpx2", "mcp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    async with contextlib.AsyncExitStack() as stack:
        setups = {
            "plain": await b.in_process(stack, None, "count"),
            "memory": await b.in_process(stack, "memory://", "count"),
            "resolved": await b.in_process(stack, "memory://", "count_resolved"),
        }
        times = await b.interleaved(setups, calls, rounds)
    print(json.dumps({name: b.summary(times, name, "plain") for name in ("memory", "resolved")}))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def run(tree: Path, calls: int, rounds: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(calls), str(rounds)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    found: dict[str, list[float]] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path, help="the other source tree")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": HERE}
    ratios: dict[tuple[str, str], list[float]] = {}
    for pair in range(args.pairs):
        order = ["before", "after"] if pair % 2 == 0 else ["after", "before"]
        for label in order:
            for setup, (_ours, _plain, ratio) in run(trees[label], args.calls, args.rounds).items():
                ratios.setdefault((label, setup), []).append(ratio)
    print(f"{args.pairs} pairs, {args.rounds} rounds of {args.calls} calls; median ratios")
    print("| setup | before | after | after / before |")
    print("|---|---|---|---|")
    for setup in ("memory", "resolved"):
        before = statistics.median(ratios[("before", setup)])
        after = statistics.median(ratios[("after", setup)])
        print(f"| {setup} | {before:.3f}x | {after:.3f}x | **{after / before:.3f}** |")


if __name__ == "__main__":
    main()
