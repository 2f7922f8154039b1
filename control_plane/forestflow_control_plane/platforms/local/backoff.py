"""When a variant whose runtime crashed may start again: the first restart at once, then
0.5 s doubling to 30 s while starts keep failing or replicas keep dying young, so a runtime
that crashes on every start costs a start per period, not a spinning CPU. A replica that stayed
up for the reset period proves the variant healthy, and the count starts afresh (kubelet's
CrashLoopBackOff, with shorter steps)."""

from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
RESET_AFTER_S = 10.0


@dataclass(frozen=True)
class Backoff:
    """`failures` in a row (failed starts, replicas that died young); no start before
    `not_before` (monotonic seconds)."""

    failures: int = 0
    not_before: float = 0.0

    def failed(self, now: float) -> Backoff:
        """After a start that failed or a replica that died unasked."""
        return Backoff(self.failures + 1, now + restart_delay(self.failures + 1))

    def settled(self, uptime: float) -> Backoff:
        """Once a replica has stayed up `uptime`: healthy after the reset period."""
        return Backoff() if self.failures and uptime >= RESET_AFTER_S else self

    def allows(self, now: float) -> bool:
        return now >= self.not_before


def restart_delay(failures: int) -> float:
    """Seconds to wait before the start that follows `failures` failures in a row."""
    if failures <= 1:
        return 0.0
    return min(FIRST_DELAY_S * 2.0 ** (failures - 2), MAX_DELAY_S)
