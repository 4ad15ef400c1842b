"""Retention policy (tuckbox.snapshot.retention): which snapshots `tuckbox forget` keeps."""

from __future__ import annotations

import datetime
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuckbox.snapshot.model import Snapshot
from tuckbox.snapshot.retention import (
    CHECKPOINT_REASON,
    Decision,
    Group,
    Policy,
    apply,
    parse_duration,
    parse_group_by,
)

UTC = datetime.timezone.utc


@pytest.fixture
def local_tz(monkeypatch):
    """Set this process's local time zone (buckets use it); restored after the test."""

    def set_tz(tz: str) -> None:
        monkeypatch.setenv("TZ", tz)
        time.tzset()

    set_tz("UTC")
    yield set_tz
    monkeypatch.undo()
    time.tzset()


_counter = iter(range(1, 10**9))


def snap(when: str, *, host="h", paths=(b"/data",), tags=(), partial=False, id: int | None = None) -> Snapshot:
    """A snapshot at `when` ("2026-11-20T10:00", UTC unless an offset is given)."""
    t = datetime.datetime.fromisoformat(when)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return Snapshot(
        time=t.isoformat(timespec="microseconds"),
        host=host,
        user="u",
        paths=list(paths),
        tree=b"\0" * 32,
        tags=list(tags),
        partial=partial,
        id=f"{next(_counter) if id is None else id:064x}",
    )


def only_group(groups: list[Group]) -> list[Decision]:
    assert len(groups) == 1
    return groups[0].decisions


def kept(groups: list[Group]) -> dict[str, tuple[str, ...]]:
    """Kept snapshot time (UTC, "YYYY-MM-DDTHH:MM") -> reasons, over every group."""
    return {
        d.snapshot.datetime.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"): d.reasons
        for g in groups
        for d in g.decisions
        if d.keep
    }


# ---- worked examples ------------------------------------------------------------------------------------------


def test_hourly_snapshots_over_40_days_with_daily_weekly_monthly(local_tz):
    # every hour from Thu 2026-01-01 00:00 to Mon 2026-02-09 23:00 (40 days, 960 snapshots)
    snaps = [
        snap(f"2026-{month:02}-{day:02}T{hour:02}:00")
        for month, days in ((1, range(1, 32)), (2, range(1, 10)))
        for day in days
        for hour in range(24)
    ]
    assert len(snaps) == 960
    groups = apply(snaps, Policy(daily=7, weekly=4, monthly=2))
    # Worked out by hand: the last snapshot of each day is 23:00.
    #   daily=7:   Feb 9, 8, 7, 6, 5, 4, 3
    #   weekly=4:  Mon Feb 9 (W07), Sun Feb 8 (W06), Sun Feb 1 (W05), Sun Jan 25 (W04)
    #   monthly=2: Feb 9, Jan 31
    expected = {
        "2026-02-09T23:00": ("daily", "weekly", "monthly"),
        "2026-02-08T23:00": ("daily", "weekly"),
        "2026-02-07T23:00": ("daily",),
        "2026-02-06T23:00": ("daily",),
        "2026-02-05T23:00": ("daily",),
        "2026-02-04T23:00": ("daily",),
        "2026-02-03T23:00": ("daily",),
        "2026-02-01T23:00": ("weekly",),
        "2026-01-31T23:00": ("monthly",),
        "2026-01-25T23:00": ("weekly",),
    }
    assert kept(groups) == expected
    expected_ids = {s.id for s in snaps if s.time[:16] in expected}
    assert len(expected_ids) == 10
    assert {d.snapshot.id for d in only_group(groups) if d.keep} == expected_ids
    assert all(d.reasons == () for d in only_group(groups) if not d.keep)


def test_last_keeps_the_n_newest(local_tz):
    n = 4
    snaps = [snap(f"2026-03-{day:02}T12:00") for day in range(1, n + 4)]  # n + 3 snapshots
    decisions = only_group(apply(snaps, Policy(last=n)))
    assert [d.snapshot.time[:10] for d in decisions] == [f"2026-03-{d:02}" for d in range(n + 3, 0, -1)]
    assert [d.keep for d in decisions] == [True] * n + [False] * 3
    assert [d.reasons for d in decisions] == [("last",)] * n + [()] * 3


def test_minus_one_means_unlimited(local_tz):
    snaps = [snap(f"2026-03-{day:02}T{hour:02}:00") for day in range(1, 21) for hour in (6, 18)]
    assert all(d.keep for d in only_group(apply(snaps, Policy(last=-1))))
    assert set(kept(apply(snaps, Policy(daily=-1)))) == {f"2026-03-{day:02}T18:00" for day in range(1, 21)}
    assert set(kept(apply(snaps, Policy(yearly=-1)))) == {"2026-03-20T18:00"}


def test_each_bucket_keeps_only_its_newest_snapshot(local_tz):
    snaps = [snap(t) for t in ("2026-05-01T10:05", "2026-05-01T10:40", "2026-05-01T11:10",
                               "2026-05-01T12:00", "2026-05-01T12:59", "2026-05-01T13:30")]
    assert kept(apply(snaps, Policy(hourly=3))) == {
        "2026-05-01T13:30": ("hourly",), "2026-05-01T12:59": ("hourly",), "2026-05-01T11:10": ("hourly",)
    }
    # same time: the larger id counts as newer
    a, b = snap("2026-05-02T08:00", id=7), snap("2026-05-02T08:00", id=9)
    decisions = only_group(apply([a, b], Policy(daily=5)))
    assert [(d.snapshot.id, d.keep) for d in decisions] == [(b.id, True), (a.id, False)]


def test_weekly_uses_iso_weeks_across_the_year_boundary(local_tz):
    # Mon 2025-12-29 and Thu 2026-01-01 are both in ISO week 2026-W01; Sun 2025-12-28 is 2025-W52
    snaps = [snap("2025-12-28T12:00"), snap("2025-12-29T12:00"), snap("2026-01-01T12:00")]
    assert set(kept(apply(snaps, Policy(weekly=5)))) == {"2026-01-01T12:00", "2025-12-28T12:00"}
    assert set(kept(apply(snaps, Policy(yearly=5)))) == {"2026-01-01T12:00", "2025-12-29T12:00"}
    assert set(kept(apply(snaps, Policy(monthly=1)))) == {"2026-01-01T12:00"}


def test_day_boundary_follows_the_local_time_zone(local_tz):
    snaps = [snap(t) for t in ("2026-03-10T03:00", "2026-03-10T01:00", "2026-03-09T23:00", "2026-03-09T04:00")]
    # in UTC: Mar 10 (03:00, 01:00), Mar 9 (23:00, 04:00)
    assert set(kept(apply(snaps, Policy(daily=2)))) == {"2026-03-10T03:00", "2026-03-09T23:00"}
    # in EST (UTC-5, POSIX "EST+5"): 22:00, 20:00, 18:00 on Mar 9, and 23:00 on Mar 8
    local_tz("EST+5")
    assert set(kept(apply(snaps, Policy(daily=2)))) == {"2026-03-10T03:00", "2026-03-09T04:00"}


def test_snapshots_written_with_other_offsets_are_bucketed_in_local_time(local_tz):
    # 2026-06-01T01:30+02:00 is May 31 23:30 UTC
    snaps = [snap("2026-06-01T01:30+02:00"), snap("2026-05-31T22:00")]
    assert set(kept(apply(snaps, Policy(daily=5)))) == {"2026-05-31T23:30"}
    assert set(kept(apply(snaps, Policy(monthly=5)))) == {"2026-05-31T23:30"}


# ---- grouping --------------------------------------------------------------------------------------------------


def test_grouping(local_tz):
    a1 = snap("2026-01-01T00:00", host="a", paths=[b"/y", b"/x"], tags=["t2", "t1"])
    a2 = snap("2026-01-02T00:00", host="a", paths=[b"/x", b"/y", b"/x"], tags=["t1"])
    a3 = snap("2026-01-03T00:00", host="a", paths=[b"/z"], tags=["t1", "t2"])
    b1 = snap("2026-01-04T00:00", host="b", paths=[b"/x", b"/y"])
    snaps = [a1, a2, a3, b1]

    def shape(groups):
        return [(g.key, [d.snapshot.id for d in g.decisions]) for g in groups]

    assert shape(apply(snaps, Policy(last=1))) == [
        ({"host": "a", "paths": ["/x", "/y"]}, [a2.id, a1.id]),
        ({"host": "a", "paths": ["/z"]}, [a3.id]),
        ({"host": "b", "paths": ["/x", "/y"]}, [b1.id]),
    ]
    assert shape(apply(snaps, Policy(last=1), group_by=("host",))) == [
        ({"host": "a"}, [a3.id, a2.id, a1.id]),
        ({"host": "b"}, [b1.id]),
    ]
    assert shape(apply(snaps, Policy(last=1), group_by=("paths", "tags"))) == [
        ({"paths": ["/x", "/y"], "tags": []}, [b1.id]),
        ({"paths": ["/x", "/y"], "tags": ["t1"]}, [a2.id]),
        ({"paths": ["/x", "/y"], "tags": ["t1", "t2"]}, [a1.id]),
        ({"paths": ["/z"], "tags": ["t1", "t2"]}, [a3.id]),
    ]
    assert shape(apply(snaps, Policy(last=1), group_by=())) == [({}, [b1.id, a3.id, a2.id, a1.id])]
    # each group is decided on its own: last=1 keeps the newest of each
    assert [d.keep for g in apply(snaps, Policy(last=1)) for d in g.decisions] == [True, False, True, True]


def test_undecodable_paths_are_grouped_by_their_fsdecoded_names(local_tz):
    s = snap("2026-01-01T00:00", paths=[b"/caf\xe9"])
    assert apply([s], Policy(last=1))[0].key == {"host": "h", "paths": ["/caf\udce9"]}


def test_no_snapshots_no_groups():
    assert apply([], Policy(last=1)) == []


def test_unknown_group_by_field_is_refused():
    with pytest.raises(ValueError, match="cannot group by 'user'"):
        apply([snap("2026-01-01T00:00")], Policy(last=1), group_by=("user",))


# ---- partial snapshots (checkpoints) ---------------------------------------------------------------------------


def test_a_checkpoint_newer_than_the_last_complete_backup_is_kept_and_counts_for_nothing(local_tz):
    snaps = [
        snap("2026-04-01T10:00", partial=True),  # older than the newest complete one: removed
        snap("2026-04-02T10:00"),
        snap("2026-04-03T10:00"),
        snap("2026-04-03T11:00", partial=True, tags=["keep"]),
        snap("2026-04-03T12:00", partial=True),
    ]
    assert kept(apply(snaps, Policy(last=1, daily=1, within=datetime.timedelta(days=30), tags=frozenset({"keep"})))) == {
        "2026-04-03T12:00": (CHECKPOINT_REASON,),
        "2026-04-03T11:00": (CHECKPOINT_REASON,),
        "2026-04-03T10:00": ("last", "daily", "within 30d"),
        "2026-04-02T10:00": ("within 30d",),
    }


def test_an_old_checkpoint_is_never_chosen_by_a_rule(local_tz):
    snaps = [snap("2026-04-05T10:00", tags=["keep"]), snap("2026-04-04T10:00", partial=True, tags=["keep"])]
    for policy in (Policy(last=-1), Policy(daily=-1), Policy(within=datetime.timedelta(days=9)),
                   Policy(tags=frozenset({"keep"}))):
        assert set(kept(apply(snaps, policy))) == {"2026-04-05T10:00"}, policy


def test_a_group_of_only_checkpoints_keeps_them_all(local_tz):
    snaps = [snap("2026-04-01T10:00", partial=True), snap("2026-04-02T10:00", partial=True)]
    decisions = only_group(apply(snaps, Policy(last=1)))
    assert [(d.keep, d.reasons) for d in decisions] == [(True, (CHECKPOINT_REASON,))] * 2


# ---- within and tags -------------------------------------------------------------------------------------------


def test_within_is_measured_from_the_newest_complete_snapshot_of_the_group(local_tz):
    # years ago, so "now" would keep nothing
    snaps = [snap("2019-06-10T12:00"), snap("2019-06-09T12:00"), snap("2019-06-08T12:00:01"),
             snap("2019-06-08T12:00"),  # exactly 2 days older: not strictly newer than the cutoff
             snap("2019-06-01T12:00"),
             snap("2019-06-11T12:00", partial=True),  # a checkpoint does not move the reference
             snap("2019-01-01T00:00", host="other")]
    assert kept(apply(snaps, Policy(within=datetime.timedelta(days=2)))) == {
        "2019-06-11T12:00": (CHECKPOINT_REASON,),
        "2019-06-10T12:00": ("within 2d",),
        "2019-06-09T12:00": ("within 2d",),
        "2019-06-08T12:00": ("within 2d",),  # the one at 12:00:01
        "2019-01-01T00:00": ("within 2d",),
    }
    assert [d.keep for d in apply(snaps, Policy(within=datetime.timedelta(days=2)))[0].decisions] == [
        True, True, True, True, False, False]


def test_within_is_measured_from_now_when_the_newest_snapshot_is_dated_ahead_of_it(local_tz):
    """A host whose clock was wrong once (a snapshot dated 2099): --keep-within 30d still keeps the last 30 days
    of its real snapshots, not only the one from the future."""
    snaps = [snap("2099-01-01T00:00"), snap("2026-06-10T12:00"), snap("2026-05-20T12:00"), snap("2026-04-01T12:00")]
    now = datetime.datetime(2026, 6, 12, tzinfo=UTC)
    policy = Policy(within=datetime.timedelta(days=30))
    assert set(kept(apply(snaps, policy, now=now))) == {"2099-01-01T00:00", "2026-06-10T12:00", "2026-05-20T12:00"}
    assert set(kept(apply(snaps, policy))) == {"2099-01-01T00:00"}  # (without a clock: from the newest)
    # now after the newest snapshot changes nothing: measured from the newest (a host that stopped backing up)
    later = datetime.datetime(2099, 6, 1, tzinfo=UTC)
    assert set(kept(apply(snaps[1:], policy, now=later))) == {"2026-06-10T12:00", "2026-05-20T12:00"}


@pytest.mark.parametrize("within, text", [
    (datetime.timedelta(days=7), "within 7d"),
    (datetime.timedelta(days=1, hours=12), "within 1d12h"),
    (datetime.timedelta(hours=5), "within 5h"),
    (datetime.timedelta(minutes=90), "within 1h1800s"),
])
def test_within_reason_names_the_duration(local_tz, within, text):
    assert only_group(apply([snap("2026-01-01T00:00")], Policy(within=within)))[0].reasons == (text,)


def test_tag_rule_and_the_order_of_reasons(local_tz):
    snaps = [snap("2026-02-10T00:00", tags=["zz", "b", "a"]), snap("2026-01-01T00:00", tags=["a"]),
             snap("2025-06-01T00:00", tags=["other"]), snap("2025-05-01T00:00")]
    policy = Policy(last=1, hourly=1, daily=1, weekly=1, monthly=1, yearly=1,
                    within=datetime.timedelta(days=7), tags=frozenset({"a", "b", "x"}))
    assert kept(apply(snaps, policy)) == {
        "2026-02-10T00:00": ("last", "hourly", "daily", "weekly", "monthly", "yearly", "within 7d", "tag a", "tag b"),
        "2026-01-01T00:00": ("tag a",),
    }


# ---- policy ----------------------------------------------------------------------------------------------------


def test_an_empty_policy_is_refused():
    assert Policy().is_empty()
    for policy in (Policy(last=1), Policy(yearly=-1), Policy(within=datetime.timedelta(hours=1)),
                   Policy(tags=frozenset({"x"}))):
        assert not policy.is_empty()
    with pytest.raises(ValueError, match="no keep rule given"):
        apply([snap("2026-01-01T00:00")], Policy())
    with pytest.raises(ValueError, match="no keep rule given"):
        apply([], Policy())


@pytest.mark.parametrize("kwargs", [{"last": -2}, {"daily": -5}, {"weekly": 1.5}, {"yearly": True},
                                    {"within": datetime.timedelta(0)}, {"within": datetime.timedelta(days=-1)}])
def test_bad_policy_values_are_refused(kwargs):
    with pytest.raises(ValueError):
        Policy(**kwargs)


def test_policy_tags_become_a_frozenset():
    assert Policy(tags={"a", "b"}).tags == frozenset({"a", "b"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Policy(tags="abc")  # type: ignore[arg-type]


# ---- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("1y2m3d4h", datetime.timedelta(days=365 + 60 + 3, hours=4)),
    ("7d", datetime.timedelta(days=7)),
    ("2w", datetime.timedelta(days=14)),
    ("36h", datetime.timedelta(hours=36)),
    ("1m", datetime.timedelta(days=30)),
    ("4h1d", datetime.timedelta(days=1, hours=4)),
    ("0y1h", datetime.timedelta(hours=1)),
    (" 3d ", datetime.timedelta(days=3)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "invalid duration ''"), (" ", "invalid duration"), ("3", "followed by a unit"),
    ("5x", "invalid duration '5x'"), ("-1d", "invalid duration '-1d': a duration cannot be negative"), ("d", "invalid duration"),
    ("1.5d", "invalid duration"), ("1D", "invalid duration"), ("1d 2h", "invalid duration"),
    ("1d2d", "unit 'd' given twice"), ("0d", "longer than zero"), ("99999999999y", "too long"),
    ("\u0661d", "invalid duration"),  # an Arabic-Indic digit one
])
def test_parse_duration_refuses_bad_input(text, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("text, expected", [
    ("host,paths", ("host", "paths")), ("host", ("host",)), ("paths,tags", ("paths", "tags")),
    ("", ()), (" tags , host ", ("tags", "host")), ("host,host", ("host",)),
])
def test_parse_group_by(text, expected):
    assert parse_group_by(text) == expected


@pytest.mark.parametrize("text", ["hosts", "host,user", "Host", "host;paths"])
def test_parse_group_by_refuses_unknown_words(text):
    with pytest.raises(ValueError, match="cannot group by .*choose from host, paths, tags"):
        parse_group_by(text)


# ---- properties ------------------------------------------------------------------------------------------------

_BASE = datetime.datetime(2025, 1, 1, tzinfo=UTC)

snapshot_specs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # host
        st.sampled_from([(b"/x",), (b"/y", b"/x"), (b"/x", b"/y")]),  # paths
        st.sampled_from([(), ("t",), ("u", "t")]),  # tags
        st.integers(0, 2 * 366 * 24 * 3600),  # seconds after _BASE
        st.sampled_from([0, -5, 2]),  # UTC offset the time is written with, in hours
        st.booleans(),  # partial
    ),
    max_size=40,
)
counts = st.sampled_from([-1, 0, 0, 1, 2, 3, 5])
policies = st.builds(
    Policy, last=counts, hourly=counts, daily=counts, weekly=counts, monthly=counts, yearly=counts,
    within=st.none() | st.builds(datetime.timedelta, hours=st.integers(1, 24 * 400)),
    tags=st.frozensets(st.sampled_from(["t", "u", "v"]), max_size=2),
).filter(lambda p: not p.is_empty())


def _build(specs) -> list[Snapshot]:
    out = []
    for i, (host, paths, tags, seconds, offset, partial) in enumerate(specs):
        t = (_BASE + datetime.timedelta(seconds=seconds)).astimezone(datetime.timezone(datetime.timedelta(hours=offset)))
        out.append(Snapshot(time=t.isoformat(timespec="microseconds"), host=host, user="u", paths=list(paths),
                            tree=b"\0" * 32, tags=list(tags), partial=partial, id=f"{i:064x}"))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=snapshot_specs, policy=policies, group_by=st.sampled_from([("host", "paths"), ("host",), ("tags",), ()]))
def test_properties(local_tz, specs, policy, group_by):
    snaps = _build(specs)
    groups = apply(snaps, policy, group_by)
    # every input snapshot decided exactly once
    assert sorted(d.snapshot.id for g in groups for d in g.decisions) == sorted(s.id for s in snaps)
    assert [g.key for g in groups] == sorted((g.key for g in groups), key=lambda k: [k[f] for f in group_by])
    has_count = any(getattr(policy, r) != 0 for r in ("last", "hourly", "daily", "weekly", "monthly", "yearly"))
    for g in groups:
        assert g.decisions and list(g.key) == list(group_by)
        order = [(d.snapshot.datetime, d.snapshot.id) for d in g.decisions]
        assert order == sorted(order, reverse=True)  # newest first
        for d in g.decisions:
            assert d.keep == bool(d.reasons)
            assert (CHECKPOINT_REASON in d.reasons) == (d.keep and d.snapshot.partial)
            if d.snapshot.partial:
                assert d.reasons in ((), (CHECKPOINT_REASON,))
        complete = [d for d in g.decisions if not d.snapshot.partial]
        if complete:
            newest = complete[0]
            if has_count or policy.within is not None:
                assert newest.keep
            # checkpoints are kept exactly when newer than the newest complete snapshot
            for d in g.decisions:
                if d.snapshot.partial:
                    assert d.keep == ((d.snapshot.datetime, d.snapshot.id) > (newest.snapshot.datetime,
                                                                              newest.snapshot.id))
        else:
            assert all(d.keep for d in g.decisions)
        for d in complete:
            if set(d.snapshot.tags) & policy.tags:
                assert d.keep


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=snapshot_specs, policy=policies, rule=st.sampled_from(["last", "hourly", "daily", "weekly", "monthly",
                                                                    "yearly"]))
def test_raising_a_count_never_keeps_less(local_tz, specs, policy, rule):
    snaps = _build(specs)
    n = getattr(policy, rule)
    bigger = Policy(**{**{f: getattr(policy, f) for f in ("last", "hourly", "daily", "weekly", "monthly", "yearly",
                                                         "within", "tags")}, rule: -1 if n == -1 else n + 1})

    def kept_ids(p):
        return {d.snapshot.id for g in apply(snaps, p) for d in g.decisions if d.keep}

    assert kept_ids(policy) <= kept_ids(bigger)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=snapshot_specs, policy=policies, seconds=st.integers(0, 2 * 366 * 24 * 3600))
def test_a_clock_given_keeps_no_less_and_only_changes_anything_when_behind_the_newest(local_tz, specs, policy,
                                                                                        seconds):
    snaps = _build(specs)
    now = _BASE + datetime.timedelta(seconds=seconds)

    def kept_ids(**kw):
        return {d.snapshot.id for g in apply(snaps, policy, **kw) for d in g.decisions if d.keep}

    assert kept_ids() <= kept_ids(now=now)
    if all(s.datetime <= now for s in snaps):
        assert kept_ids() == kept_ids(now=now)


# ---- against a reference model ---------------------------------------------------------------------------------
# An independent statement of the documented policy (restic's): per group, each count rule keeps the newest
# complete snapshot of each of its N newest buckets that have one; buckets from time.localtime/strftime (not
# datetime.astimezone); instants as whole microseconds (not datetime comparisons).

_RULE_FORMATS = {"hourly": "%Y-%m-%d %H", "daily": "%Y-%m-%d", "weekly": "%G-W%V", "monthly": "%Y-%m", "yearly": "%Y"}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
# instants where local time jumps in the zones below, and calendar boundaries (UTC)
_ANCHORS = [datetime.datetime(*t, tzinfo=UTC) for t in (
    (2018, 3, 11, 7), (2018, 11, 4, 6),  # New York: spring forward, fall back
    (2018, 3, 25, 1), (2018, 10, 28, 1),  # Berlin
    (2018, 11, 4, 3), (2019, 2, 17, 2),  # Sao Paulo (DST began and ended at local midnight)
    (2018, 3, 31, 15), (2018, 10, 6, 15, 30),  # Lord Howe (a half-hour shift)
    (2018, 11, 4, 4, 30),  # the made-up zone below: clocks go back at 00:30, to 23:30 the day before
    (2018, 12, 31, 23), (2021, 1, 3, 12),  # a year boundary; the end of ISO week 2020-W53
)]
_ZONES = ["UTC", "America/New_York", "Europe/Berlin", "America/Sao_Paulo", "Australia/Lord_Howe",
          "XST5XDT,M3.2.0,M11.1.0/0:30"]


def _reference(specs, policy: Policy, group_by: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """id -> reasons, from (id, host, paths, tags, instant in µs since the epoch, partial) tuples."""
    groups: dict[tuple, list] = {}
    for spec in specs:
        sid, host, paths, tags, micros, partial = spec
        fields = {"host": host, "paths": tuple(sorted(set(p.decode() for p in paths))), "tags": tuple(sorted(set(tags)))}
        groups.setdefault(tuple(fields[f] for f in group_by), []).append(spec)
    reasons: dict[str, list[str]] = {}
    for members in groups.values():
        members = sorted(members, key=lambda s: (s[4], s[0]), reverse=True)
        for s in members:
            reasons[s[0]] = []
        complete = [s for s in members if not s[5]]
        if policy.last:
            for s in complete if policy.last == -1 else complete[:policy.last]:
                reasons[s[0]].append("last")
        for rule, fmt in _RULE_FORMATS.items():
            n = getattr(policy, rule)
            newest_of: dict[str, str] = {}  # bucket -> id of its newest snapshot, newest bucket first
            for s in complete:
                newest_of.setdefault(time.strftime(fmt, time.localtime(s[4] // 10**6)), s[0])
            for sid in list(newest_of.values())[: None if n == -1 else n]:
                reasons[sid].append(rule)
        if policy.within is not None and complete:
            cutoff = complete[0][4] - policy.within // datetime.timedelta(microseconds=1)
            for s in complete:
                if s[4] > cutoff:
                    reasons[s[0]].append(f"within {_format_within(policy.within)}")
        for s in complete:
            reasons[s[0]] += [f"tag {t}" for t in sorted(policy.tags & set(s[3]))]
        for s in members:
            if s[5] and (not complete or (s[4], s[0]) > (complete[0][4], complete[0][0])):
                reasons[s[0]].append(CHECKPOINT_REASON)
    return {sid: tuple(r) for sid, r in reasons.items()}


def _format_within(d: datetime.timedelta) -> str:
    hours, seconds = divmod(d.seconds, 3600)
    return f"{d.days}d" * bool(d.days) + f"{hours}h" * bool(hours) + f"{seconds}s" * bool(seconds)


reference_specs = st.sampled_from(_ANCHORS).flatmap(lambda anchor: st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from([(b"/x",), (b"/y", b"/x"), (b"/x", b"/y")]),
        st.sampled_from([(), ("t",), ("u", "t")]),
        st.just(anchor) | st.sampled_from(_ANCHORS),  # mostly one anchor per example: snapshots close together
        # seconds from the anchor: often the same few (equal times), or within two hours (across the jump),
        # else anywhere within 40 days
        st.sampled_from([-1, 0, 1]) | st.integers(-12, 12).map(lambda k: k * 600)
        | st.integers(-40 * 86400, 40 * 86400),
        st.sampled_from([0, 0, 999_999]),  # microseconds
        st.sampled_from([0, 2, -5, 13]),  # the UTC offset the time is written with, in hours
        st.booleans(),  # partial
    ),
    max_size=30,
))
reference_policies = st.builds(
    Policy, last=counts, hourly=counts, daily=counts, weekly=counts, monthly=counts, yearly=counts,
    # often a whole number of hours or 10 minutes, as far apart as snapshots often are (a cutoff on one of them)
    within=st.none() | st.builds(datetime.timedelta, hours=st.sampled_from([1, 2, 24]) | st.integers(1, 24 * 100))
    | st.builds(datetime.timedelta, minutes=st.integers(1, 12).map(lambda k: k * 10)),
    tags=st.frozensets(st.sampled_from(["t", "u", "v"]), max_size=2),
).filter(lambda p: not p.is_empty())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=reference_specs, policy=reference_policies, zone=st.sampled_from(_ZONES),
       group_by=st.sampled_from([("host", "paths"), ("host",), ("tags",), ()]))
def test_apply_agrees_with_a_reference_model(local_tz, specs, policy, zone, group_by):
    local_tz(zone)
    snaps, plain = [], []
    for i, (host, paths, tags, anchor, seconds, micros, offset, partial) in enumerate(specs):
        instant = anchor + datetime.timedelta(seconds=seconds, microseconds=micros)
        written = instant.astimezone(datetime.timezone(datetime.timedelta(hours=offset)))
        sid = f"{(i * 7919) % 1000:064x}"  # ids not in input order
        snaps.append(Snapshot(time=written.isoformat(timespec="microseconds"), host=host, user="u",
                              paths=list(paths), tree=b"\0" * 32, tags=list(tags), partial=partial, id=sid))
        plain.append((sid, host, paths, tags, (instant - _EPOCH) // datetime.timedelta(microseconds=1), partial))
    got = {d.snapshot.id: d.reasons for g in apply(snaps, policy, group_by) for d in g.decisions}
    assert got == _reference(plain, policy, group_by)


def test_a_bucket_the_local_clock_returns_to_keeps_only_its_newest_snapshot(local_tz):
    """A zone whose clocks go back across midnight (00:30 -> 23:30 the day before): Sunday 00:10, Saturday 23:40,
    Sunday 00:10 again an hour later, in that order. --keep-daily keeps one snapshot per day, the newest."""
    local_tz("XST5XDT,M3.2.0,M11.1.0/0:30")
    sunday_early = snap("2018-11-04T04:10")  # 00:10 XDT
    saturday = snap("2018-11-04T04:40")  # 23:40 XST, Saturday
    sunday_late = snap("2018-11-04T05:10")  # 00:10 XST
    assert [datetime.datetime.fromisoformat(s.time).astimezone().strftime("%a %H:%M")
            for s in (sunday_early, saturday, sunday_late)] == ["Sun 00:10", "Sat 23:40", "Sun 00:10"]
    decisions = only_group(apply([sunday_early, saturday, sunday_late], Policy(daily=-1)))
    assert [(d.snapshot.id, d.keep) for d in decisions] == [(sunday_late.id, True), (saturday.id, True),
                                                           (sunday_early.id, False)]
