"""Progress lines for long work, at most about one a minute.

A line says what is done of how much, the rate, the objective where there is one and the time
left, e.g.::

    cell2location training: 1,200/30,000 epochs (4%), 3.1 epochs/s, -ELBO 1.23457e+06,
    at most 2 h 34 min left (the epoch cap; it stops at convergence), 6 min 27 s so far

Used by cell2location's training loops (epochs, -ELBO) and RCTD's fit (locations). Logging
only: nothing here changes what is computed.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

#: seconds between two progress lines
DEFAULT_EVERY = 60.0
#: the clock progress lines read (seconds); tests replace it
CLOCK = time.monotonic

log = logging.getLogger("spatialmap.progress")


def format_duration(seconds: float) -> str:
    """``42 s``, ``6 min 27 s``, ``2 h 05 min``."""
    total = int(round(max(seconds, 0.0)))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_rate(per_second: float, unit: str) -> str:
    """``3.1 epochs/s``, ``1,250 locations/s``, or ``7.7 s per epoch`` below one a second."""
    if per_second >= 10:
        return f"{per_second:,.0f} {unit}/s"
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    if per_second > 0:
        return f"{1 / per_second:.3g} s per {unit.rstrip('s')}"
    return f"no {unit} done yet"


class Progress:
    """Log ``what: done/total unit (pct), rate, objective, time left`` at most every ``every`` seconds.

    Parameters
    ----------
    what
        What is being done, the start of every line ("cell2location training").
    total
        How many units in all (None: unknown, no percentage nor time left).
    unit
        Plural name of a unit ("epochs", "locations").
    objective
        Name of the objective logged with the value given to :meth:`update` ("-ELBO").
    cap
        ``total`` is only an upper bound (training that may stop earlier): the time left is "at most".
    every
        Seconds between two lines (default :data:`DEFAULT_EVERY`); the first comes ``every``
        seconds after the start.
    logger, clock
        Where lines go (default: this module's logger); the clock to read (default :data:`CLOCK`).
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str,
        *,
        objective: str | None = None,
        cap: bool = False,
        every: float | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"progress total must be 0 or more, got {total}")
        self.what, self.total, self.unit, self.objective, self.cap = what, total, unit, objective, cap
        self.every = float(DEFAULT_EVERY if every is None else every)
        self.logger = logger or log
        self.clock = clock or CLOCK
        self.start = self.last = self.clock()
        self.done = 0
        self.lines = 0

    def update(self, done: int, value: float | None = None, note: str | None = None) -> str | None:
        """Record ``done`` units; log and return a line when ``every`` seconds have passed since the last."""
        self.done = int(done)
        now = self.clock()
        if now - self.last < self.every:
            return None
        self.last = now
        return self._emit(self.line(now, value, note))

    def advance(self, n: int = 1, value: float | None = None, note: str | None = None) -> str | None:
        """:meth:`update` with ``n`` more units done."""
        return self.update(self.done + int(n), value, note)

    def line(self, now: float, value: float | None = None, note: str | None = None) -> str:
        """The progress line at time ``now``."""
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            head = f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            head = f"{self.what}: {self.done:,} {self.unit}"
        parts = [head, format_rate(rate, self.unit)]
        if value is not None:
            parts.append(f"{self.objective or 'objective'} {value:.6g}")
        if note:
            parts.append(note)
        if self.total and rate > 0 and self.done < self.total:
            left = format_duration((self.total - self.done) / rate)
            parts.append(
                f"at most {left} left (the {self.unit} cap; it may stop earlier)" if self.cap else f"about {left} left"
            )
        parts.append(f"{format_duration(elapsed)} so far")
        return ", ".join(parts)

    def finish(self, value: float | None = None, note: str | None = None) -> str | None:
        """A last line (``done in ...``) when progress lines were logged; None for work too short to have any."""
        if not self.lines:
            return None
        now = self.clock()
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [
            f"{self.what}: done, {self.done:,} {self.unit} in {format_duration(elapsed)}",
            format_rate(rate, self.unit),
        ]
        if value is not None:
            parts.append(f"{self.objective or 'objective'} {value:.6g}")
        if note:
            parts.append(note)
        return self._emit(", ".join(parts))

    def _emit(self, line: str) -> str:
        self.logger.info("%s", line)
        self.lines += 1
        return line
