"""The fault campaign of e2e/faults at a larger size: on the local platform, with clients
calling throughout, one rollout per kill point, cycling through every (rollout kind,
process) pair at seeded random instants; each fault is repaired with `ffctl up`. Prints
what recovered and how fast, by process killed and by rollout kind, and every failed
request by why.

    .venv/bin/python -m bench.faults [--kill-points 300] [--seed 11]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from e2e.conftest import new_example, new_platform
from e2e.faults.campaign import STUCK_AFTER_S, Campaign, KillPoint, plan, serving_v1

WIDTH = 120  # every column whole, in a terminal or not


def row(name: str, points: list[KillPoint]) -> list[str]:
    outcomes = [p.outcome for p in points]
    times = [p.recover_s for p in points if p.recover_s is not None]
    median = f"{statistics.median(times):.1f}" if times else "-"
    worst = f"{max(times):.1f}" if times else "-"
    return [
        name, str(len(points)), str(outcomes.count("succeeded")),
        str(outcomes.count("rolled_back")), str(outcomes.count("shadow")),
        str(sum(p.recover_s is None for p in points)),
        str(sum(bool(p.violations) for p in points)), median, worst,
    ]


def by(campaign: Campaign, title: str, key: Callable[[KillPoint], str]) -> Table:
    table = Table(title=title)
    for column in ("", "kill points", "succeeded", "rolled back", "shadows", "stuck",
                   "violations", "recover median s", "recover max s"):
        table.add_column(column, justify="left" if not column else "right")
    for name in sorted({key(p) for p in campaign.points}):
        table.add_row(*row(name, [p for p in campaign.points if key(p) == name]))
    table.add_row(*row("all", campaign.points), style="bold")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-points", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ff-faults-"))
    platform = new_platform(work)
    try:
        run = serving_v1(platform, new_example(work), args.seed, STUCK_AFTER_S)
        try:
            campaign = asyncio.run(run.campaign(plan(args.seed, args.kill_points)))
        finally:
            run.close()
    finally:
        platform.ffctl("down")
    console = Console(width=WIDTH)
    subject = f"{args.kill_points} kill points, seed {args.seed}"
    console.print(by(campaign, f"faults by process killed ({subject})", lambda p: p.target))
    console.print(by(campaign, f"faults by rollout kind ({subject})", lambda p: p.kind))
    requests = Table(title=f"requests: {campaign.tally.total}, recovery measured from `ffctl up`")
    requests.add_column("failed, and why")
    requests.add_column("requests", justify="right")
    for why, count in sorted(campaign.failures().items()):
        requests.add_row(why, str(count))
    console.print(requests)
    for violation in campaign.violations():
        console.print(f"[red]{violation}")


if __name__ == "__main__":
    main()
