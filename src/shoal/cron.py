"""The ticks of a schedule: when a cron expression, an ``@every`` interval or a ``@daily``-style alias fires.

Pure: no I/O, no clock of its own. Every tick is a whole Unix second, computed from the expression alone
(never from when a node happened to look), so that every master finds the same ticks:

- five cron fields (minute hour day-of-month month day-of-week) in a time zone, as cronsim reads them
  (Debian cron's rules, DST included: a wall time skipped by a spring-forward fires at the first instant
  after the gap, a wall time that comes twice at a fall-back fires once, hourly fields fire each real hour);
- ``@every 30s`` (units s, m, h, d; parts may be joined: ``@every 1h30m``): every multiple of the
  interval since the Unix epoch, whatever the time zone;
- ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly`` (``@annually``): their
  cron expressions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from shoal.errors import InvalidInput

#: Longest expression accepted.
MAX_CRON_CHARS = 200
#: Shortest and longest ``@every`` interval, in seconds.
MIN_EVERY_S = 1
MAX_EVERY_S = 366 * 86400
#: Longest time zone name (the IANA names are at most about 30).
MAX_TIMEZONE_CHARS = 64

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY_RE = re.compile(r"^@every\s+((?:[0-9]{1,9}[smhd])+)$")
_PART_RE = re.compile(r"([0-9]+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: What an expression may hold: printable ASCII and blanks, not blank alone (as the REST document says).
CRON_PATTERN = r"^[\t ]*[!-~][\t -~]*$"
_CRON_RE = re.compile(CRON_PATTERN)
_ZONE_RE = re.compile(r"^[A-Za-z0-9_+./-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Cron:
    """A checked expression in its time zone; build it with ``parse``."""

    expr: str
    zone: ZoneInfo
    every: int | None = None  # seconds, for ``@every``; None: ``fields`` in ``zone``
    fields: str = ""

    def after(self, t: float) -> float:
        """The first tick strictly after ``t``."""
        if self.every is not None:
            return float((math.floor(t) // self.every + 1) * self.every)
        start = datetime.fromtimestamp(math.floor(t), self.zone)
        return next(CronSim(self.fields, start)).timestamp()

    def at_or_before(self, t: float) -> float | None:
        """The last tick at or before ``t`` (None if there is none: an expression that never fired)."""
        if self.every is not None:
            return float(math.floor(t) // self.every * self.every)
        # cronsim's reverse walk answers ticks strictly before a whole second, and at or before the second of
        # a time with a fraction: a microsecond past the second makes it the latter.
        start = datetime.fromtimestamp(math.floor(t), self.zone) + timedelta(microseconds=1)
        try:
            return next(CronSim(self.fields, start, reverse=True)).timestamp()
        except StopIteration:
            return None

    def upcoming(self, t: float, count: int) -> list[float]:
        """The next ``count`` ticks strictly after ``t``."""
        ticks: list[float] = []
        for _ in range(count):
            t = self.after(t)
            ticks.append(t)
        return ticks


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone of that name (None or "": UTC); InvalidInput if there is none of that name."""
    if name is None or name == "":
        return ZoneInfo("UTC")
    if not isinstance(name, str) or not _ZONE_RE.match(name) or ".." in name:
        raise InvalidInput(f"timezone must be an IANA time zone name such as Europe/Paris, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(f"no time zone is named {name!r} (an IANA name such as Europe/Paris or UTC)") from None


def parse(expr: object, timezone: str | None = None) -> Cron:
    """Check ``expr`` and ``timezone``; InvalidInput says what is wrong with either."""
    tz = zone(timezone)
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidInput("cron is required: five fields such as '*/5 * * * *', '@every 30s' or '@daily'")
    if len(expr) > MAX_CRON_CHARS:
        raise InvalidInput(f"cron is {len(expr)} characters; the limit is {MAX_CRON_CHARS}")
    if not _CRON_RE.fullmatch(expr):
        raise InvalidInput(f"cron may hold only printable ASCII characters, spaces and tabs, got {expr!r}")
    text = " ".join(expr.split())
    if text.startswith("@every"):
        return Cron(text, tz, every=_every(text))
    fields = ALIASES.get(text.lower(), text)
    if fields.startswith("@"):
        raise InvalidInput(f"unknown cron alias {text!r}; use @every N(s|m|h|d), {', '.join(ALIASES)}")
    if len(fields.split()) != 5:
        raise InvalidInput(
            f"invalid cron expression {text!r}: it takes 5 fields (minute hour day-of-month month day-of-week)"
        )
    try:
        cron = Cron(text, tz, fields=fields)
        cron.after(0.0)  # some mistakes show only on the first walk
    except (CronSimError, StopIteration, ValueError) as exc:
        raise InvalidInput(f"invalid cron expression {text!r}: {exc or 'it never fires'}") from None
    return cron


def _every(text: str) -> int:
    match = _EVERY_RE.match(text)
    if not match:
        raise InvalidInput(f"invalid interval {text!r}: write @every N with a unit s, m, h or d (e.g. @every 30s)")
    seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _PART_RE.findall(match.group(1)))
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise InvalidInput(f"an @every interval is at least {MIN_EVERY_S}s and at most {MAX_EVERY_S // 86400}d")
    return seconds
