"""The circuit breaker's state machine and the health settings, as pure data.

Per deployment id::

    closed --(`failures` failures within `within_s`)--> open
    open   --(`open_s` elapsed)--> half_open          (computed lazily from the stored open_until)
    half_open: `allow()` hands out at most `half_open_probes` concurrent probe slots
    half_open --(a recorded success)--> closed
    half_open --(a recorded failure)--> open again for `open_s`

The memory and SQLite health stores (``stores.health``) load a :class:`BreakerState`, call it and
save it back; the Redis store runs the same machine in Lua. Kept here, with no I/O, so the machine
is testable with plain numbers and ``simulate`` can reason about it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from litellm_payg.core.snapshot import State


class HealthError(ValueError):
    """A health store was misused or misconfigured."""


@dataclass(frozen=True)
class BreakerConfig:
    failures: int = 5
    within_s: float = 60.0
    open_s: float = 30.0
    half_open_probes: int = 1
    probe_timeout_s: float | None = None  # None: open_s

    def __post_init__(self) -> None:
        if self.failures < 1 or self.half_open_probes < 1:
            raise HealthError("circuit breaker: failures and half_open_probes must be >= 1")
        for name in ("within_s", "open_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise HealthError(f"circuit breaker: {name} must be > 0, got {v!r}")
        if self.probe_timeout_s is not None and not self.probe_timeout_s > 0:
            raise HealthError(f"circuit breaker: probe_timeout_s must be > 0, got {self.probe_timeout_s!r}")

    @property
    def probe_ttl_s(self) -> float:
        return self.open_s if self.probe_timeout_s is None else self.probe_timeout_s


@dataclass(frozen=True)
class LatencyConfig:
    window_s: float = 300.0
    max_samples: int = 200
    min_samples: int = 5

    def __post_init__(self) -> None:
        if not self.window_s > 0 or self.max_samples < 1 or self.min_samples < 1:
            raise HealthError("latency: window_s must be > 0, max_samples and min_samples >= 1")


def p95(values: Iterable[float]) -> float | None:
    """Nearest-rank 95th percentile (``None`` for no values)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


@dataclass
class BreakerState:
    """One deployment's breaker: recent failures, when it opened and until when, probe slots out."""

    failures: list[float] = field(default_factory=list)
    opened_at: float | None = None
    open_until: float | None = None
    opened_by: str | None = None
    probes: list[float] = field(default_factory=list)

    def phase(self, now: float) -> State:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half_open"

    def live_probes(self, now: float, cfg: BreakerConfig) -> list[float]:
        return [t for t in self.probes if t > now - cfg.probe_ttl_s]

    def live_failures(self, now: float, cfg: BreakerConfig) -> list[float]:
        return [t for t in self.failures if t > now - cfg.within_s]

    def allow(self, now: float, cfg: BreakerConfig) -> bool:
        phase = self.phase(now)
        if phase == "closed":
            return True
        if phase == "open":
            return False
        self.probes = self.live_probes(now, cfg)
        if len(self.probes) >= cfg.half_open_probes:
            return False
        self.probes.append(now)
        return True

    def _open(self, now: float, cfg: BreakerConfig, by: str) -> None:
        self.failures, self.probes = [], []
        self.opened_at, self.open_until, self.opened_by = now, now + cfg.open_s, by

    def record(self, ok: bool, now: float, cfg: BreakerConfig) -> State:
        phase = self.phase(now)
        if phase == "closed":
            self.failures = self.live_failures(now, cfg)
            if not ok:
                self.failures.append(now)
                if len(self.failures) >= cfg.failures:
                    self._open(now, cfg, "failures")
        elif phase == "half_open":
            if ok:
                self.failures, self.probes = [], []
                self.opened_at = self.open_until = self.opened_by = None
            else:
                self._open(now, cfg, "probe")
        return self.phase(now)
