"""Progress lines for long loops outside training: done/total, rate and ETA.

    ticker = Ticker(len(files), "verify target val", unit="files")
    for f in files:
        check(f)
        ticker.update()
    ticker.finish()

logs through the ``udas_ray`` logger, at most one line per ``every_s`` seconds::

    [verify target val] 1200/6000 files, 85.3/s, eta 0m56s
    [verify target val] 6000/6000 files in 1m10s, 85.7/s

and the second line once at the end, however short the loop was, unless it took less than
``quiet_under_s`` (file checks that run before a one-line config error keep stderr at that one
line). The rate is the mean since
the ticker was made (steady, and it includes start-up such as Ray actors loading a model, so
early ETAs err long). The ticker only speaks when ``update`` is called: a caller that waits a
long time before its first item (actors starting) logs a line of its own first. The clock is a
parameter so tests can drive it.

:func:`rough_eta` is the driver's whole-run estimate: the mean of the stages run so far times
the stages left. Rough on purpose: a pseudo-label pass and a training stage differ in cost.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger("udas_ray")


def duration(seconds: float | None) -> str:
    """``0m56s``, ``12m03s``, ``2h05m``; ``?`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Ticker:
    def __init__(self, total: int, what: str, unit: str = "images", every_s: float = 10.0,
                 quiet_under_s: float = 0.0, clock=time.monotonic):
        self.total, self.what, self.unit, self.every_s, self.clock = int(total), what, unit, every_s, clock
        self.quiet_under_s = quiet_under_s
        self.count = 0
        self.start = self.last = clock()
        self.finished = False

    def rate(self, now: float | None = None) -> float:
        """Items per second since the ticker was made (0 before any time has passed)."""
        elapsed = (self.clock() if now is None else now) - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the mean rate; None while the rate is unknown."""
        rate = self.rate(now)
        return max(self.total - self.count, 0) / rate if rate > 0 else None

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        return (f"[{self.what}] {self.count}/{self.total} {self.unit}, {self.rate(now):.1f}/s, "
                f"eta {duration(self.eta(now))}")

    def update(self, n: int = 1) -> bool:
        """Count ``n`` more items done; log a line if ``every_s`` passed since the last one.
        Returns whether it logged."""
        self.count += n
        now = self.clock()
        if now - self.last < self.every_s or self.count >= self.total:
            return False  # the last item's line is finish()'s
        self.last = now
        log.info(self.line(now))
        return True

    def finish(self) -> None:
        """The closing line (once): how many, how long, the mean rate."""
        if self.finished:
            return
        self.finished = True
        now = self.clock()
        if now - self.start < self.quiet_under_s:
            return
        log.info("[%s] %d/%d %s in %s, %.1f/s", self.what, self.count, self.total, self.unit,
                 duration(now - self.start), self.rate(now))


def rough_eta(durations: list[float], stages_left: int) -> float | None:
    """Seconds left for a run: the mean of the stages timed so far times the stages left; None
    before any stage was timed."""
    if not durations:
        return None
    return sum(durations) / len(durations) * stages_left
