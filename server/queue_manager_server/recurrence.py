"""When a schedule runs: cron expressions in an IANA time zone, or fixed intervals, as Redis-clock ms.

Python computes every occurrence (the Lua scripts only compare and store the times computed here). Cron
expressions are evaluated by cronsim, which follows Debian's cron (Vixie cron) including its handling of
daylight-saving changes: a daily job at 02:30 runs once on the night the clocks go back, and at 03:00 on
the night 02:30 does not exist. Six fields mean seconds first.

Catch-up: the stored due time of a schedule is the occurrence it waits for. When a server reaches it late
(every server was down, or stalled), `plan` decides what runs:

- ``skip``: only the latest due occurrence, and only if it is at most `MISFIRE_GRACE_MS` late; the others
  are skipped.
- ``one``: one run standing for all the missed occurrences (the latest one's).
- ``all``: one run per missed occurrence, oldest first, at most `MAX_CATCH_UP` (the most recent ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# Most runs one catch-up adds (the proto promises this bound); older missed occurrences are dropped.
MAX_CATCH_UP = 1000
# How late an occurrence may still run under "skip": a restart or a stalled server delays it by seconds,
# an outage by more. One minute, Quartz's default misfire threshold.
MISFIRE_GRACE_MS = 60_000
_MAX_CRON = 200
# The last whole second datetime (and a protobuf Timestamp) can hold: 9999-12-31T23:59:59Z.
_LAST_MS = 253_402_300_799_000


def time_zone(name: str) -> tzinfo:
    """The zone of an IANA name ("" and "UTC" are UTC); raises ValueError for an unknown name."""
    if name in ("", "UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name[:100]!r} is not an IANA time zone (such as 'Europe/Paris' or 'UTC')"
        ) from None


def check_cron(expr: str, zone: tzinfo) -> None:
    """Raises ValueError (saying what is wrong) unless expr is a cron expression that ever matches."""
    if len(expr) > _MAX_CRON:
        raise ValueError(f"is {len(expr)} characters long; the limit is {_MAX_CRON}")
    if len(expr.split()) not in (5, 6):
        raise ValueError(
            f"{expr!r} has {len(expr.split())} fields; use 5 (minute hour day-of-month month day-of-week) "
            "or 6 (seconds first)"
        )
    try:
        it = CronSim(expr, datetime(2000, 1, 1, tzinfo=zone))
    except CronSimError as exc:
        raise ValueError(_cron_error(expr, exc)) from None
    if next(it, None) is None:
        raise ValueError(f"{expr!r} never matches")


def _cron_error(expr: str, exc: CronSimError) -> str:
    """What is wrong with an expression cronsim refused. It refuses a day of the month that none of the
    months named has (``0 0 30 2 *``) as a bad day-of-month: that one is valid but never runs."""
    for field_index in (-3, -2):  # the day of the month, the month (in both the 5- and 6-field forms)
        fields = expr.split()
        fields[field_index] = "*"
        try:
            CronSim(" ".join(fields), datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError:
            return f"{expr!r} is not a valid cron expression: {exc}"
    return f"{expr!r} never matches: none of the months it names has the day of the month it names"


@dataclass(frozen=True, slots=True)
class Recurrence:
    """The occurrences of a schedule, in ms since the epoch.

    Either ``cron`` (in ``zone``) or ``every_ms`` is set. Interval occurrences are ``anchor_ms + k *
    every_ms``. Occurrences before ``start_ms`` or after ``end_ms`` (-1: none) do not count.
    """

    cron: str = ""
    zone: tzinfo = field(default=UTC)
    every_ms: int = 0
    anchor_ms: int = 0
    start_ms: int = -1
    end_ms: int = -1

    def first_at_or_after(self, t: int) -> int | None:
        """The first occurrence at or after t; None when there is none (past the end)."""
        t = max(t, self.start_ms)
        if self.every_ms:
            k = max(0, -((self.anchor_ms - t) // self.every_ms))  # ceil((t - anchor) / every)
            found: int | None = self.anchor_ms + k * self.every_ms
        else:
            # Occurrences fall on whole seconds, and cronsim yields those strictly after its start.
            found = self._cron_next(-(-t // 1000) * 1000 - 1000)
        if found is None or (self.end_ms >= 0 and found > self.end_ms):
            return None
        return found

    def between(self, lo: int, hi: int, cap: int) -> list[int]:
        """The occurrences in [lo, hi], oldest first; the most recent `cap` of them when there are more."""
        lo = max(lo, self.start_ms)
        if self.end_ms >= 0:
            hi = min(hi, self.end_ms)
        if hi < lo or cap <= 0:
            return []
        if self.every_ms:
            first = max(0, -((self.anchor_ms - lo) // self.every_ms))
            last = (hi - self.anchor_ms) // self.every_ms
            first = max(first, last - cap + 1)
            return [self.anchor_ms + k * self.every_ms for k in range(first, last + 1)]
        # Walk back from hi: bounded by cap however long ago lo is.
        found: list[int] = []
        try:
            walk_from = min(hi // 1000 * 1000 + 1000, _LAST_MS)
            for moment in CronSim(self.cron, self._at(walk_from), reverse=True):
                ms = round(moment.timestamp() * 1000)
                if ms < lo:
                    break
                found.append(ms)
                if len(found) == cap:
                    break
        except (OverflowError, ValueError):
            pass  # walked back past year 1, or hi is at year 9999's end: what was found is all there is
        found.reverse()
        return found

    def _cron_next(self, after: int) -> int | None:
        """The first cron occurrence after `after`; None past year 9999 (datetime's range ends there)."""
        try:
            moment = next(CronSim(self.cron, self._at(after)), None)
        except (OverflowError, ValueError):
            return None
        return None if moment is None else round(moment.timestamp() * 1000)

    def _at(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=self.zone)


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What one firing does: the occurrences to add jobs for (oldest first) and the next due time."""

    occurrences: list[int]
    next_due_ms: int  # -1: the schedule is over


def plan(
    rec: Recurrence, due_ms: int, now_ms: int, catch_up: str, runs_left: int | None, chunk: int
) -> FirePlan:
    """Decides what a schedule due at `due_ms` runs at `now_ms` (see the module docstring).

    Args:
        rec: The schedule's occurrences.
        due_ms: Its stored due time (an occurrence, at or before now).
        now_ms: Redis time now.
        catch_up: "skip", "one" or "all".
        runs_left: Runs before the schedule's limit; None for no limit.
        chunk: Most occurrences one firing adds; the rest of a catch-up stays due for the next firing.
    """
    if runs_left is not None and runs_left <= 0:
        return FirePlan([], -1)
    if catch_up == "all":
        occurrences = rec.between(due_ms, now_ms, MAX_CATCH_UP)
    else:
        occurrences = rec.between(due_ms, now_ms, 1)
        if catch_up == "skip" and occurrences and now_ms - occurrences[0] > MISFIRE_GRACE_MS:
            occurrences = []
    following = rec.first_at_or_after(now_ms + 1)
    next_due = -1 if following is None else following
    if runs_left is not None and len(occurrences) >= runs_left:
        occurrences, next_due = occurrences[:runs_left], -1
    if len(occurrences) > chunk:
        occurrences, next_due = occurrences[:chunk], occurrences[chunk]
    return FirePlan(occurrences, next_due)
