"""Retention is a pure function: properties over any timestamps and any
policy (hypothesis), plus a worked example whose answer is known."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from safesync.functions.backup.layout import EVENT_KINDS, KINDS
from safesync.functions.backup.retention import PERIODS, Candidate, Policy, plan_retention

UTC = timezone.utc
START = datetime(2024, 1, 1, tzinfo=UTC)

policies = st.builds(
    Policy,
    keep_daily=st.integers(0, 10),
    keep_weekly=st.integers(0, 6),
    keep_monthly=st.integers(0, 8),
    keep_predeploy=st.integers(0, 5),
    keep_event=st.integers(0, 4),
)


@st.composite
def backup_sets(draw) -> list[Candidate]:
    # Minutes over ~2 years: many same-day / same-week / same-month clashes,
    # equal timestamps included.
    minutes = draw(st.lists(st.integers(0, 2 * 366 * 24 * 60), max_size=60))
    if draw(st.booleans()):  # dense clusters too
        minutes += [m + d for m in minutes[:5] for d in draw(st.lists(st.integers(0, 600), max_size=4))]
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(minutes), max_size=len(minutes)))
    return [Candidate(f"b{i:04d}", START + timedelta(minutes=m), k) for i, (m, k) in enumerate(zip(minutes, kinds, strict=True))]


def _newest(backups: list[Candidate]) -> Candidate:
    return max(backups, key=lambda b: (b.at, b.id))


@settings(max_examples=300, deadline=None)
@given(backup_sets(), policies)
def test_partition_and_newest_always_kept(backups, policy) -> None:
    plan = plan_retention(backups, policy)
    ids = {b.id for b in backups}
    assert set(plan.keep) | set(plan.delete) == ids
    assert not set(plan.keep) & set(plan.delete)
    assert len(plan.delete) == len(set(plan.delete))
    if backups:
        assert _newest(backups).id in plan.keep


@settings(max_examples=300, deadline=None)
@given(backup_sets(), policies)
def test_each_rule_keeps_at_most_its_count_one_per_period_the_newest_of_it(backups, policy) -> None:
    plan = plan_retention(backups, policy)
    by_id = {b.id: b for b in backups}
    limits = {"daily": policy.keep_daily, "weekly": policy.keep_weekly, "monthly": policy.keep_monthly}
    for rule, period_of in PERIODS:
        chosen = [(i, r.split(" ", 1)[1]) for i, rs in plan.keep.items() for r in rs if r.startswith(rule + " ")]
        periods = Counter(p for _, p in chosen)
        assert len(chosen) <= limits[rule]
        assert all(n == 1 for n in periods.values()), f"{rule}: two backups kept for one period"
        for backup_id, period in chosen:
            same = [b for b in backups if period_of(b.at) == period]
            assert _newest(same).id == backup_id
        # ...and they are the most recent periods that have backups.
        all_periods = sorted({period_of(b.at) for b in backups}, reverse=True)
        assert sorted(periods, reverse=True) == all_periods[: limits[rule]]
    for kind, limit in {"predeploy": policy.keep_predeploy, **{k: policy.keep_event for k in EVENT_KINDS}}.items():
        kept = [i for i, rs in plan.keep.items() if any(r.startswith(kind + " #") for r in rs)]
        of_kind = sorted((b for b in backups if b.kind == kind), key=lambda b: (b.at, b.id), reverse=True)
        assert sorted(kept) == sorted(b.id for b in of_kind[:limit])
    # Nothing is kept without a reason, and nothing beyond what the policy allows.
    bound = 1 + sum(limits.values()) + policy.keep_predeploy + len(EVENT_KINDS) * policy.keep_event
    assert len(plan.keep) <= bound
    assert all(plan.keep[i] for i in plan.keep)
    assert all(by_id[i] for i in plan.keep)


@settings(max_examples=300, deadline=None)
@given(backup_sets(), policies)
def test_idempotent_pruning_the_kept_set_deletes_nothing(backups, policy) -> None:
    plan = plan_retention(backups, policy)
    kept = [b for b in backups if b.id in plan.keep]
    again = plan_retention(kept, policy)
    assert again.delete == []
    assert set(again.keep) == set(plan.keep)


@settings(max_examples=200, deadline=None)
@given(backup_sets(), policies, st.sampled_from(["keep_daily", "keep_weekly", "keep_monthly", "keep_predeploy", "keep_event"]))
def test_a_larger_policy_never_deletes_more(backups, policy, knob) -> None:
    smaller = plan_retention(backups, policy)
    bigger_policy = Policy(**{**policy.__dict__, knob: getattr(policy, knob) + 1})
    bigger = plan_retention(backups, bigger_policy)
    assert set(smaller.keep) <= set(bigger.keep)


@given(backup_sets())
def test_zero_policy_keeps_only_the_newest(backups) -> None:
    plan = plan_retention(backups, Policy(0, 0, 0, 0, 0))
    assert list(plan.keep) == ([_newest(backups).id] if backups else [])


def test_worked_example_90_days_of_dailies_plus_predeploys() -> None:
    """A daily backup at 02:00 for 90 days (Mon 2024-01-01 … Sat 2024-03-30)
    plus a predeploy at 15:00 on each of the last 25 days; policy 7/4/6/20."""
    backups = [Candidate(f"d{day:03d}", START + timedelta(days=day, hours=2), "daily") for day in range(90)]
    backups += [Candidate(f"p{day:03d}", START + timedelta(days=day, hours=15), "predeploy") for day in range(65, 90)]
    plan = plan_retention(backups, Policy(7, 4, 6, 20, 10))
    rules = defaultdict(set)
    for backup_id, why in plan.keep.items():
        for reason in why:
            rules[reason.split(" ")[0]].add(backup_id)
    assert rules["newest"] == {"p089"}
    # Each of the last 7 days: its 15:00 predeploy is newer than its 02:00 daily.
    assert rules["daily"] == {f"p{d:03d}" for d in range(83, 90)}
    # Newest of the ISO weeks ending Sat 03-30, Sun 03-24, Sun 03-17, Sun 03-10.
    assert rules["weekly"] == {"p089", "p083", "p076", "p069"}
    # Only three months have backups: Mar, Feb (29th = day 59), Jan (31st = day 30).
    assert rules["monthly"] == {"p089", "d059", "d030"}
    assert rules["predeploy"] == {f"p{d:03d}" for d in range(70, 90)}
    assert set(plan.keep) == {f"p{d:03d}" for d in range(69, 90)} | {"d059", "d030"}
    assert len(plan.delete) == 115 - 23


@given(backup_sets(), st.data(), policies)
def test_partial_backups_never_cost_a_full_one_its_place(backups, data, policy) -> None:
    """Marking some backups partial (only some tables dumped) keeps every
    full backup the period rules keep without them, and the newest full
    one (a partial undo point still counts among the N newest of its kind)."""
    partial = data.draw(st.sets(st.sampled_from([b.id for b in backups]) if backups else st.nothing()))
    marked = [Candidate(b.id, b.at, b.kind, b.id in partial) for b in backups]
    full = [b for b in marked if not b.partial]
    plan = plan_retention(marked, policy)
    periodic = {
        backup_id for backup_id, reasons in plan_retention(full, policy).keep.items()
        if any(reason.split(" ")[0] in ("newest", "daily", "weekly", "monthly") for reason in reasons)
    }
    assert periodic <= set(plan.keep)
    if full:
        assert _newest(full).id in plan.keep
    assert set(plan_retention([b for b in marked if b.id in plan.keep], policy).keep) == set(plan.keep)
