"""One fault campaign: the platform serving the example's v1, clients calling it throughout,
and one rollout per kill point. Each kill point deploys a rollout of its kind, SIGKILLs its
target a seeded random time after the deploy began (so the API may die under the deploy
itself), repairs with `ffctl up` (deploying again if the deploy was cut off), and waits for
the platform to recover: the rollout finished, the gateway routing by the stored split and
every replica serving its stored artifact. Then it checks what the clients were answered
since, the audit log of the rollout and, for a shadow, that the mirror replays again."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import RedisError

from forestflow_control_plane.platforms.local.launcher import Launcher
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.state.records import ContractSnapshot
from forestflow_control_plane.state.store import Store
from tests.support import example_mlp

from ..conftest import LocalPlatform
from ..load import Tally, load, until_answered, until_sent_since
from . import invariants
from .invariants import CONTRACT
from .kinds import KINDS, Maker, Rollout, SlowFiles
from .targets import TARGETS, NoTargetError, kill

# How long after its deploy begins each kind is still under way (an in-place swap's own
# fetch time comes on top): the range a kill point's instant is drawn from.
WINDOW_S = {"canary": 3.5, "gated": 4.0, "in_place": 1.0, "shadow": 2.0, "expiry": 1.5}
FETCH_S = (0.5, 3.0)
WEIGHTS = {"mlp-1": 1, "mlp-2": 2, "mlp-3": 3}
POLL_S = 0.1
# Past this after `ffctl up`, a rollout counts as stuck: one reconcile interval to resume,
# one more for a reconcile lease the dead worker held, and the rollout's own steps.
STUCK_AFTER_S = 2 * Settings.reconcile_seconds + 15
NEAR_S = 2.0
# Paced clients (some 300 requests a second in all) leave this two-core machine the CPU its
# control plane needs: back to back, they would time its recovery, not the platform's.
CLIENT_PAUSE_S = 0.01


@dataclass
class KillPoint:
    index: int
    kind: str
    target: str
    delay_s: float
    fetch_s: float
    version: str = ""
    outcome: str = ""
    recover_s: float | None = None  # from `ffctl up` returning; None: it never recovered
    violations: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        recovered = "never" if self.recover_s is None else f"{self.recover_s:.1f} s"
        return (f"#{self.index} {self.kind} {self.version}, {self.target} killed at "
                f"{self.delay_s:.2f} s: {self.outcome or '?'}, recovered in {recovered}")


@dataclass(frozen=True)
class Kill:
    target: str
    began: float
    repaired: float


@dataclass
class Campaign:
    points: list[KillPoint]
    tally: Tally
    # Each kill: its target, when the kill began and when `ffctl up` had repaired it (the
    # event loop's clock).
    kills: list[Kill] = field(default_factory=list)

    @property
    def stuck(self) -> list[KillPoint]:
        return [p for p in self.points if p.recover_s is None]

    def violations(self) -> list[str]:
        return [f"{p}: {v}" for p in self.points for v in p.violations]

    def failures(self) -> Counter[str]:
        """Every failed request by why: sent while the gateway was down (refused, or on a
        connection the dead gateway had kept alive: never accepted), in flight when the
        gateway was killed, or lost (any other)."""
        why: Counter[str] = Counter()
        gateway = [k for k in self.kills if k.target == "gateway"]
        for error, (sent, failed) in zip(self.tally.errors, self.tally.errors_at, strict=True):
            if any(k.began <= sent <= k.repaired for k in gateway):
                why["not accepted: sent while the gateway was down"] += 1
            elif any(sent < k.began <= failed for k in gateway):
                why["in flight at a gateway kill"] += 1
            else:
                why[f"lost{self._near(sent)}: {error[:120]}"] += 1
        for response, sent in zip(self.tally.answers, self.tally.sent_at, strict=True):
            if response.status_code != 200:
                why[f"lost{self._near(sent)}: {response.status_code} {response.text[:120]}"] += 1
        return why

    def _near(self, sent: float) -> str:
        """The kill a failed request was sent closest after (or during), for its reason."""
        before = [k for k in self.kills if k.began - NEAR_S <= sent <= k.repaired + NEAR_S]
        return f" near a {before[-1].target} kill" if before else ""

    def lost(self) -> int:
        return sum(n for why, n in self.failures().items() if why.startswith("lost"))

    def recovery(self) -> tuple[float, float]:
        """Median and max time to recover, over the kill points that did."""
        times = [p.recover_s for p in self.points if p.recover_s is not None]
        return (statistics.median(times), max(times)) if times else (0.0, 0.0)


def plan(seed: int, count: int) -> list[KillPoint]:
    """`count` kill points cycling through every (kind, target) pair, each cycle shuffled,
    each at its own drawn instant."""
    rng = random.Random(seed)
    pairs = list(itertools.product(KINDS, TARGETS))
    order: list[tuple[str, str]] = []
    while len(order) < count:
        rng.shuffle(pairs)
        order += pairs
    return [
        KillPoint(i, kind, target, round(rng.uniform(0, WINDOW_S[kind]), 2),
                  round(rng.uniform(*FETCH_S), 2))
        for i, (kind, target) in enumerate(order[:count])
    ]


def serving_v1(platform: LocalPlatform, example: Path, seed: int, bound_s: float) -> Run:
    """The platform up and serving the example's v1, ready for a campaign."""
    platform.up()
    deployed = platform.ffctl("deploy", str(example), "--wait")
    if deployed.returncode != 0:
        raise RuntimeError(f"deploying v1 failed: {deployed.stdout}{deployed.stderr}")
    return Run(platform, example, seed, bound_s)


def weights_beside(example: Path) -> list[str]:
    """Weights from other seeds beside the example's own: what each new version serves."""
    example_mlp(example.parent, **WEIGHTS)
    return [f"{name}.safetensors" for name in WEIGHTS]


def _show(point: KillPoint) -> None:
    print(point, *(f"\n  {v}" for v in point.violations), flush=True)


class Run:
    def __init__(self, platform: LocalPlatform, example: Path, seed: int, bound_s: float) -> None:
        self.platform = platform
        self._rng = random.Random(seed)
        self._bound_s = bound_s
        self._files = SlowFiles(example.parent)
        self._maker = Maker(example, weights_beside(example), self._files)
        settings = Launcher(platform.home).recorded()
        assert settings is not None, "the platform is not up"
        self._store = Store(Redis.from_url(settings.redis_url, socket_timeout=2))

    def close(self) -> None:
        self._files.close()

    async def campaign(
        self, points: list[KillPoint], progress: Callable[[KillPoint], None] = _show
    ) -> Campaign:
        async with load(self.platform, pause_s=CLIENT_PAUSE_S) as tally:
            done = Campaign(points, tally)
            await until_answered(tally, 10)
            for point in points:
                await self._kill_point(point, done)
                progress(point)
        return done

    async def _kill_point(self, point: KillPoint, campaign: Campaign) -> None:
        loop = asyncio.get_running_loop()
        serving = max(self._snapshot_now().contract.traffic.items(), key=lambda vp: vp[1])[0]
        rollout = self._maker.make(point.kind, serving, point.fetch_s)
        point.version = rollout.version
        last_event = self._last_event_id()
        deploying = asyncio.create_task(self._ffctl("deploy", str(rollout.model_file)))
        await asyncio.sleep(point.delay_s)
        began = loop.time()
        try:
            await asyncio.to_thread(kill, self.platform, point.target, self._rng)
        except NoTargetError as exc:
            point.violations.append(f"nothing to kill: {exc}")
        deployed = await deploying
        await asyncio.to_thread(self.platform.up)
        repaired_at = loop.time()
        campaign.kills.append(Kill(point.target, began, repaired_at))
        if deployed.returncode != 0:  # cut off with the API: the user deploys again
            again = await self._ffctl("deploy", str(rollout.model_file))
            if again.returncode != 0:
                point.violations.append(f"deploy again failed: {again.stdout}{again.stderr}")
                return
        wrong = await self._recovered(rollout, repaired_at + self._bound_s)
        if wrong:
            point.violations.append("not recovered: " + "; ".join(wrong))
        else:
            point.recover_s = loop.time() - repaired_at
        snapshot = self._snapshot_now()
        record = snapshot.contract.rollout
        point.outcome = "shadow" if point.kind == "shadow" else (
            record.status.value if record is not None else "no rollout")
        point.violations += await self._answers_follow(snapshot, campaign.tally)
        point.violations += invariants.repeated_events(self._events_since(last_event))
        if point.kind == "shadow":
            point.violations += await self._mirrored_then_retired(rollout)

    async def _recovered(self, rollout: Rollout, deadline: float) -> list[str]:
        """Wait until the rollout finished, the gateway routes by the stored split and every
        replica serves its stored artifact; what still was not so at `deadline`."""
        loop = asyncio.get_running_loop()
        while True:
            wrong = await asyncio.to_thread(self._wrong_now, rollout)
            if not wrong or loop.time() > deadline:
                return wrong
            await asyncio.sleep(POLL_S)

    def _wrong_now(self, rollout: Rollout) -> list[str]:
        try:
            snapshot = self._store.get(CONTRACT)
        except RedisError as exc:
            return [f"the store cannot be read: {exc}"]
        if not invariants.finished(snapshot, rollout):
            return [f"the rollout has not finished: {_record(snapshot)}"]
        try:
            routed = invariants.gateway_split(self.platform.gateway)
        except Exception as exc:
            return [f"the gateway's split cannot be read: {exc!r}"]
        stored = invariants.stored_split(snapshot)
        wrong = [] if routed == stored else [f"the gateway routes {routed}, the store {stored}"]
        return wrong + invariants.wrong_artifacts(self.platform.home, snapshot)

    async def _answers_follow(self, snapshot: ContractSnapshot, tally: Tally) -> list[str]:
        """Requests sent from now on are answered by the versions the split names."""
        since = asyncio.get_running_loop().time()
        await until_sent_since(tally, since, 10, timeout=60)
        split = invariants.stored_split(snapshot)
        answers = [r for r in tally.sent_since(since) if r.status_code == 200]
        served = Counter(tally.version_of(r) for r in answers)
        strays = {v: n for v, n in served.items() if v not in split}
        return [f"answered by {strays} outside the split {split}"] if strays else []

    async def _mirrored_then_retired(self, rollout: Rollout) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._bound_s
        while await self._replays(rollout.version) < 1:
            if loop.time() > deadline:
                return [f"the mirror replayed nothing to {rollout.version} after the repair"]
            await asyncio.sleep(0.5)
        retired = await self._ffctl("delete", "variant", CONTRACT, rollout.version)
        if retired.returncode != 0:
            return [f"retiring the shadow failed: {retired.stdout}{retired.stderr}"]
        return []

    async def _replays(self, version: str) -> int:
        shown = await self._ffctl("shadow", "report", CONTRACT, "-o", "json")
        if shown.returncode != 0:
            return 0
        reports = orjson.loads(shown.stdout)["shadows"]
        return sum(int(r["requests"]) for r in reports if r["version"] == version)

    async def _ffctl(self, *args: str) -> Any:
        return await asyncio.to_thread(self.platform.ffctl, *args)

    def _snapshot_now(self) -> ContractSnapshot:
        """The store, waiting out a Redis that is coming back."""
        deadline = time.monotonic() + self._bound_s
        while True:
            try:
                return self._store.get(CONTRACT)
            except RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_S)

    def _last_event_id(self) -> str:
        events = self._store.events(CONTRACT, count=1)
        return events[-1].id if events else "0"

    def _events_since(self, event_id: str) -> list[Any]:
        return [e for e in self._store.events(CONTRACT, count=200) if _after(e.id, event_id)]


def _after(event_id: str, other: str) -> bool:
    def key(i: str) -> tuple[int, int]:
        ms, _, seq = i.partition("-")
        return int(ms), int(seq or 0)

    return key(event_id) > key(other)


def _record(snapshot: ContractSnapshot) -> str:
    record = snapshot.contract.rollout
    return "none" if record is None else orjson.dumps(record.to_dict()).decode()
