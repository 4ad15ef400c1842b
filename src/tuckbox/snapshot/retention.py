"""Retention policy: which snapshots ``tuckbox forget`` keeps (pure; no I/O).

Rules, applied by :func:`apply`:

* Snapshots are grouped by the ``group_by`` fields: ``host``; ``paths`` as a
  sorted set of ``os.fsdecode``\\ d paths; ``tags`` as a sorted set. With no
  fields every snapshot is in one group. Each group is decided on its own and
  groups come back sorted by their key. Within a group snapshots are ordered
  newest first by ``(datetime, id)``; "newer" below means earlier in that order.
* Only complete snapshots take part in the keep rules. Each count rule walks
  them newest first and keeps a snapshot when no newer one is in its bucket,
  until it has kept its count (so it keeps the newest snapshot of each of the
  N newest buckets that have one; a bucket the local clock returns to, where
  clocks go back across its boundary, is still one bucket). ``last`` keeps
  the N newest. A count of -1 means unlimited; 0 turns the rule off. Buckets use the snapshot's time in this machine's local time
  zone, as ``tuckbox snapshots`` shows it: hourly (year, month, day, hour),
  daily the date, weekly the ISO (year, week), monthly (year, month), yearly
  the year.
* ``within`` keeps every complete snapshot strictly newer than the newest
  complete snapshot of the group minus the duration. It is measured from that
  snapshot, not from now, so forgetting never empties a group whose host
  stopped backing up -- but from ``now`` when that is given and earlier: a
  snapshot dated ahead of the clock (a host whose clock was wrong once) does
  not put the rest of its group outside the span.
* ``tags`` keeps every complete snapshot carrying any of the given tags.
* A snapshot is kept if any rule keeps it. Its reasons name every rule that
  kept it, in the order last, hourly, daily, weekly, monthly, yearly,
  ``within <duration>``, ``tag <tag>`` (tags sorted). Removed snapshots have
  no reasons.
* Partial snapshots (checkpoints of unfinished backups) never count toward
  and are never chosen by the rules above. One newer than the newest complete
  snapshot of its group (or in a group with no complete snapshot) is kept, as
  it may hold the only copy of newer data, with the reason
  :data:`CHECKPOINT_REASON`; every other partial snapshot is removed.
* A policy with no rule at all is refused (``ValueError``): it would forget
  everything.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Hashable

from .model import Snapshot

CHECKPOINT_REASON = "checkpoint newer than the last complete backup"
GROUP_FIELDS = ("host", "paths", "tags")

_BUCKETS: dict[str, Callable[[datetime.datetime], Hashable]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}
_COUNTS = ("last", *_BUCKETS)
_UNITS = {"y": 365, "m": 30, "w": 7, "d": 1}  # in days; "h" is hours


@dataclass(frozen=True)
class Policy:
    last: int = 0  # keep the N newest
    hourly: int = 0  # keep the newest snapshot of each of the N newest hours that have snapshots
    daily: int = 0
    weekly: int = 0  # ISO year-week
    monthly: int = 0
    yearly: int = 0
    within: datetime.timedelta | None = None  # keep every snapshot newer than (newest of the group - within)
    tags: frozenset[str] = field(default_factory=frozenset)  # keep every snapshot carrying any of these

    def __post_init__(self) -> None:
        for name in _COUNTS:
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < -1:
                raise ValueError(f"keep-{name} must be a whole number >= 0, or -1 for unlimited; got {n!r}")
        if self.within is not None and self.within <= datetime.timedelta(0):
            raise ValueError(f"keep-within must be a positive duration; got {self.within}")
        if isinstance(self.tags, str):
            raise TypeError("Policy.tags must be a collection of tags, not a string")
        object.__setattr__(self, "tags", frozenset(self.tags))

    def is_empty(self) -> bool:
        """True when no rule is set (a caller must then refuse to forget everything)."""
        return all(getattr(self, n) == 0 for n in _COUNTS) and self.within is None and not self.tags


@dataclass(frozen=True)
class Decision:
    snapshot: Snapshot
    keep: bool
    reasons: tuple[str, ...]  # why kept, e.g. ("last", "daily", "within 7d"); () when removed


@dataclass(frozen=True)
class Group:
    key: dict[str, object]  # only the grouping fields, e.g. {"host": "h", "paths": ["/data"]}
    decisions: list[Decision]  # newest first


def apply(
    snapshots: list[Snapshot],
    policy: Policy,
    group_by: tuple[str, ...] = ("host", "paths"),
    now: datetime.datetime | None = None,
) -> list[Group]:
    """Decide, for every snapshot, whether ``policy`` keeps it; see the module docstring. ``now`` (aware): this
    machine's clock, the latest time ``within`` is measured from."""
    if policy.is_empty():
        raise ValueError("no keep rule given: refusing to forget every snapshot")
    group_by = _check_fields(group_by)
    groups: dict[tuple[object, ...], list[Snapshot]] = {}
    for snap in snapshots:
        groups.setdefault(_group_values(snap, group_by), []).append(snap)
    return [
        Group(key={f: _listed(v) for f, v in zip(group_by, values)}, decisions=_decide(groups[values], policy, now))
        for values in sorted(groups)
    ]


def parse_group_by(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of grouping fields ("host,paths"); "" means no grouping."""
    words = [w.strip() for w in text.split(",")]
    return _check_fields(tuple(w for w in words if w))


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a duration such as "1y2m3d4h" (y = 365 days, m = 30 days, w = 7 days, d, h), parts in any order."""
    s = text.strip()
    if s.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: a duration cannot be negative; write it like 7d or 1y6m "
                         "(it is counted back from the group's newest snapshot)")
    if not re.fullmatch(r"(?:[0-9]+[ymwdh])+", s):
        raise ValueError(
            f"invalid duration {text!r}: expected whole numbers each followed by a unit, "
            "y (365 days), m (30 days), w, d or h, e.g. 7d or 1y6m"
        )
    days = hours = 0
    seen: set[str] = set()
    for number, unit in re.findall(r"([0-9]+)([ymwdh])", s):
        if unit in seen:
            raise ValueError(f"invalid duration {text!r}: unit {unit!r} given twice")
        seen.add(unit)
        if unit == "h":
            hours += int(number)
        else:
            days += int(number) * _UNITS[unit]
    try:
        result = datetime.timedelta(days=days, hours=hours)
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too long") from None
    if not result:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return result


def _check_fields(fields: tuple[str, ...]) -> tuple[str, ...]:
    for f in fields:
        if f not in GROUP_FIELDS:
            raise ValueError(f"cannot group by {f!r}: choose from {', '.join(GROUP_FIELDS)} (comma-separated)")
    return tuple(dict.fromkeys(fields))  # drop repeats, keep the order given


def _group_values(snap: Snapshot, group_by: tuple[str, ...]) -> tuple[object, ...]:
    values: list[object] = []
    for f in group_by:
        if f == "host":
            values.append(snap.host)
        elif f == "paths":
            values.append(tuple(sorted({os.fsdecode(p) for p in snap.paths})))
        else:
            values.append(tuple(sorted(set(snap.tags))))
    return tuple(values)


def _listed(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _format_duration(d: datetime.timedelta) -> str:
    hours, rest = divmod(d - datetime.timedelta(days=d.days), datetime.timedelta(hours=1))
    text = (f"{d.days}d" if d.days else "") + (f"{hours}h" if hours else "")
    if rest:
        text += f"{rest.total_seconds():g}s"
    return text


def _decide(group: list[Snapshot], policy: Policy, now: datetime.datetime | None) -> list[Decision]:
    ordered = sorted(group, key=lambda s: (s.datetime, s.id), reverse=True)
    complete = [i for i, s in enumerate(ordered) if not s.partial]
    reasons: list[list[str]] = [[] for _ in ordered]

    if policy.last:
        for i in complete if policy.last == -1 else complete[: policy.last]:
            reasons[i].append("last")
    for rule, bucket_of in _BUCKETS.items():
        count: int = getattr(policy, rule)
        # every bucket seen, not only the previous one: where clocks go back across midnight local dates run
        # Sunday, Saturday, Sunday, and that Sunday is still one day
        seen: set[Hashable] = set()
        for i in complete:
            if len(seen) == count:  # never true for -1 (unlimited)
                break
            bucket = bucket_of(ordered[i].datetime.astimezone())
            if bucket not in seen:
                reasons[i].append(rule)
                seen.add(bucket)
    if policy.within is not None and complete:
        newest = ordered[complete[0]].datetime
        cutoff = (newest if now is None else min(newest, now)) - policy.within
        reason = f"within {_format_duration(policy.within)}"
        for i in complete:
            if ordered[i].datetime > cutoff:
                reasons[i].append(reason)
    if policy.tags:
        for i in complete:
            reasons[i].extend(f"tag {t}" for t in sorted(policy.tags.intersection(ordered[i].tags)))
    newest_complete = complete[0] if complete else len(ordered)
    for i in range(newest_complete):  # the partial snapshots newer than every complete one
        reasons[i].append(CHECKPOINT_REASON)

    return [Decision(snapshot=s, keep=bool(r), reasons=tuple(r)) for s, r in zip(ordered, reasons)]
